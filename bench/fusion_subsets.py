"""Mean score fusion of every subset of some kept networks, best first by the choosing split.

    python bench/fusion_subsets.py results/*/vgg_*.npz [--top 10]
    python bench/fusion_subsets.py --join configs/pipelines/fer2013_kept.yaml CANDIDATE.npz...

Each file is a kept `<stage>.npz` (bench/keep_probs.py) or a stage's probs.npz. Prints each
subset's accuracy on PublicTest (the split members are chosen on) and PrivateTest (reported,
never chosen on); a subset's mean is what `fer2013_ensemble.yaml` with those members reports.
``--join PIPELINE`` applies the kept fusion's rule instead: the members of the pipeline's
score-fusion stage alone, then with each candidate added, one at a time; a candidate joins when it
raises the mean's accuracy on the choosing split.
"""

import argparse
import itertools
from pathlib import Path

import yaml

from fer_lightning.artifacts import load_npz
from fer_lightning.ensemble import fuse_scores


def rank_subsets(members: list[str], choose: str = "public_test", report: str = "private_test"):
    """``[(choose_acc, report_acc, subset)]`` for every non-empty subset, best ``choose_acc`` first."""
    loaded = {m: load_npz(m) for m in members}  # each file read once, as the score-fusion stage reads it
    rows = [(*_mean_accs(loaded, subset, choose, report), subset)
            for size in range(1, len(members) + 1) for subset in itertools.combinations(members, size)]
    return sorted(rows, key=lambda r: r[0], reverse=True)


def join_rows(pipeline: Path, candidates: list[str], choose: str = "public_test", report: str = "private_test"):
    """``[(choose_acc, report_acc, members)]``: the file members of ``pipeline``'s score-fusion stage,
    then those members with each candidate added."""
    spec = yaml.safe_load(Path(pipeline).read_text())
    fusions = [st for st in spec["stages"].values() if st.get("kind") == "score_fusion"]
    if len(fusions) != 1:
        raise SystemExit(f"{pipeline}: --join needs exactly one score_fusion stage, found {len(fusions)}")
    members = [str(Path(pipeline).parent / m) for m in fusions[0]["inputs"]["members"]]
    missing = [m for m in members + candidates if not Path(m).is_file()]
    if missing:
        raise SystemExit(f"{pipeline}: member or candidate {missing[0]} is not a file (--join fuses kept files)")
    loaded = {m: load_npz(m) for m in members + candidates}
    subsets = [tuple(members)] + [(*members, c) for c in candidates]
    return [(*_mean_accs(loaded, subset, choose, report), subset) for subset in subsets]


def _mean_accs(loaded, subset, *splits):
    labels = loaded[subset[0]]
    return [100 * (fuse_scores([loaded[m][f"{s}_probs"] for m in subset], "mean").argmax(1)
                   == labels[f"{s}_labels"]).mean() for s in splits]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+", help="kept .npz files (at least two); with --join, the candidates")
    ap.add_argument("--join", type=Path, help="a pipeline whose score-fusion members to extend, one candidate at a time")
    ap.add_argument("--choose", default="public_test", help="split to rank the subsets by")
    ap.add_argument("--report", default="private_test", help="split to report beside it")
    ap.add_argument("--top", type=int, default=10, help="how many subsets to print")
    args = ap.parse_args()
    if args.join:
        (base, base_report, members), *grown = join_rows(args.join, args.members, args.choose, args.report)
        print(f"{args.choose:>12} {args.report:>12}  mean fusion of")
        print(f"{base:12.2f} {base_report:12.2f}  the {len(members)} members of {args.join}")
        for choose_acc, report_acc, subset in grown:
            verdict = "joins" if choose_acc > base else f"does not join ({args.choose} not raised)"
            print(f"{choose_acc:12.2f} {report_acc:12.2f}  + {subset[-1]}: {verdict}")
        return
    print(f"{args.choose:>12} {args.report:>12}  mean fusion of")
    for choose_acc, report_acc, subset in rank_subsets(args.members, args.choose, args.report)[: args.top]:
        names = ", ".join(str(Path(m).parent.name) + "/" + Path(m).stem for m in subset)
        print(f"{choose_acc:12.2f} {report_acc:12.2f}  {names}")


if __name__ == "__main__":
    main()
