"""Mean score fusion of every subset of some kept networks, best first by the choosing split.

    python bench/fusion_subsets.py results/*/vgg_*.npz [--top 10]

Each file is a kept `<stage>.npz` (bench/keep_probs.py) or a stage's probs.npz. Prints each
subset's accuracy on PublicTest (the split members are chosen on) and PrivateTest (reported,
never chosen on); a subset's mean is what `fer2013_ensemble.yaml` with those members reports.
"""

import argparse
import itertools
from pathlib import Path

from fer_lightning.artifacts import load_npz
from fer_lightning.ensemble import fuse_scores


def rank_subsets(members: list[str], choose: str = "public_test", report: str = "private_test"):
    """``[(choose_acc, report_acc, subset)]`` for every non-empty subset, best ``choose_acc`` first."""
    loaded = {m: load_npz(m) for m in members}  # each file read once, as the score-fusion stage reads it
    labels = loaded[members[0]]
    rows = []
    for size in range(1, len(members) + 1):
        for subset in itertools.combinations(members, size):
            accs = [100 * (fuse_scores([loaded[m][f"{s}_probs"] for m in subset], "mean").argmax(1)
                           == labels[f"{s}_labels"]).mean() for s in (choose, report)]
            rows.append((*accs, subset))
    return sorted(rows, key=lambda r: r[0], reverse=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+", help="kept .npz files (at least two)")
    ap.add_argument("--choose", default="public_test", help="split to rank the subsets by")
    ap.add_argument("--report", default="private_test", help="split to report beside it")
    ap.add_argument("--top", type=int, default=10, help="how many subsets to print")
    args = ap.parse_args()
    print(f"{args.choose:>12} {args.report:>12}  mean fusion of")
    for choose_acc, report_acc, subset in rank_subsets(args.members, args.choose, args.report)[: args.top]:
        names = ", ".join(str(Path(m).parent.name) + "/" + Path(m).stem for m in subset)
        print(f"{choose_acc:12.2f} {report_acc:12.2f}  {names}")


if __name__ == "__main__":
    main()
