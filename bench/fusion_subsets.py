"""Mean score fusion of every subset of some kept networks, best first by the choosing split.

    python bench/fusion_subsets.py results/*/vgg_*.npz [--top 10]
    python bench/fusion_subsets.py --join configs/pipelines/fer2013_kept.yaml CANDIDATE.npz...
    python bench/fusion_subsets.py --pick results/*/*.npz
    python bench/fusion_subsets.py --cv 2 configs/pipelines/fer2013_kept.yaml configs/pipelines/fer2013_kept_all.yaml
    python bench/fusion_subsets.py --rules configs/pipelines/fer2013_kept_all.yaml

Each file is a kept `<stage>.npz` (bench/keep_probs.py) or a stage's probs.npz. Prints each
subset's accuracy on PublicTest (the split members are chosen on) and PrivateTest (reported,
never chosen on); a subset's mean is what `fer2013_ensemble.yaml` with those members reports.
``--join PIPELINE`` applies the kept fusion's rule instead: the members of the pipeline's
score-fusion stage alone, then with each candidate added, one at a time; a candidate joins when it
raises the mean's accuracy on the choosing split. ``--pick`` groups kept files by network (a
file ``<stage>_<tta>.npz`` is ``<stage>.npz`` rescored by bench/tta_rescore.py) and prints, per
network, the file whose choosing-split accuracy is highest: a pipeline's members. ``--cv K``
measures how each pipeline's PublicTest-fitted weights generalise: weights fitted on K-1 folds of
the choosing split, accuracy on the held-out fold, averaged over folds and 20 shuffles.
``--rules`` compares other fusion rules with the stage's mean and weights (geometric mean, weights
on log scores, weights plus per-class offsets), each fitted on the choosing split: the reported
split's accuracy, and the same K-fold accuracy on the choosing split.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

from fer_lightning.artifacts import load_npz
from fer_lightning.ensemble import fit_weights, fuse_scores
from fer_lightning.errors import UserError
from fer_lightning.pipeline.spec import load_pipeline
from fer_lightning.tta import TTA_MODES


# bench/tta_rescore.py names a rescored file <stage>_<tta>.npz; longest first, so flip_crops is not read as
# a stage ending in _crops rescored with flip
_TTA_LONGEST_FIRST = sorted(TTA_MODES, key=len, reverse=True)


def rank_subsets(members: list[str], choose: str = "public_test", report: str = "private_test"):
    """``[(choose_acc, report_acc, subset)]`` for every non-empty subset, best ``choose_acc`` first."""
    loaded = {m: load_npz(m) for m in members}  # each file read once, as the score-fusion stage reads it
    rows = [(*_mean_accs(loaded, subset, choose, report), subset)
            for size in range(1, len(members) + 1) for subset in itertools.combinations(members, size)]
    return sorted(rows, key=lambda r: r[0], reverse=True)


def pipeline_members(pipeline: Path) -> list[str]:
    """The file members of ``pipeline``'s one score-fusion stage, as the runner resolves them."""
    try:
        stages = load_pipeline(pipeline).stages.values()
    except UserError as e:  # a missing member file, a bad key: the loader's one-line message
        raise SystemExit(str(e)) from None
    fusions = [st for st in stages if st.kind == "score_fusion"]
    if len(fusions) != 1:
        raise SystemExit(f"{pipeline}: needs exactly one score_fusion stage, found {len(fusions)}")
    return list(fusions[0].inputs["members"])


def join_rows(pipeline: Path, candidates: list[str], choose: str = "public_test", report: str = "private_test"):
    """``[(choose_acc, report_acc, members)]``: the file members of ``pipeline``'s score-fusion stage,
    then those members with each candidate added."""
    members = pipeline_members(pipeline)  # the loader has checked that each member is a file
    missing = [c for c in candidates if not Path(c).is_file()]
    if missing:
        raise SystemExit(f"{pipeline}: candidate {missing[0]} is not a file (--join fuses kept files)")
    loaded = {m: load_npz(m) for m in members + candidates}
    subsets = [tuple(members)] + [(*members, c) for c in candidates]
    return [(*_mean_accs(loaded, subset, choose, report), subset) for subset in subsets]


def pick_per_network(files: list[str], choose: str = "public_test"):
    """``[(choose_acc, file)]``, one per network: of a network's kept files (its flip scores
    ``<stage>.npz`` and its rescored ``<stage>_<tta>.npz``) the one best on ``choose``; the fewest
    views win a tie."""
    networks: dict[tuple, list] = {}
    for f in files:
        path = Path(f)
        stage = next((path.stem[: -len(t) - 1] for t in _TTA_LONGEST_FIRST if path.stem.endswith("_" + t)), path.stem)
        networks.setdefault((str(path.parent), stage), []).append(f)
    picked = []
    for group in networks.values():
        scored = [(_mean_accs({f: load_npz(f)}, (f,), choose)[0], f) for f in sorted(group, key=len)]
        picked.append(max(scored, key=lambda r: r[0]))  # max keeps the first (shortest name) of equals
    return picked


def _folds(n: int, folds: int, shuffles: int):
    """``(fit, held)`` index pairs: each shuffle of ``range(n)`` cut into ``folds`` parts, each part held out once."""
    rng = np.random.default_rng(0)
    for _ in range(shuffles):
        parts = np.array_split(rng.permutation(n), folds)
        for k, held in enumerate(parts):
            yield np.concatenate([p for j, p in enumerate(parts) if j != k]), held


def cv_accuracy(members: list[str], folds: int = 2, shuffles: int = 20, split: str = "public_test") -> float:
    """Accuracy of weighted fusion on held-out folds of ``split``, its weights fitted on the rest."""
    loaded = [load_npz(m) for m in members]
    probs, labels = [z[f"{split}_probs"] for z in loaded], loaded[0][f"{split}_labels"]
    accs = []
    for fit, held in _folds(len(labels), folds, shuffles):
        w = fit_weights([p[fit] for p in probs], labels[fit])
        accs.append(100 * (fuse_scores([p[held] for p in probs], "weighted", w).argmax(1) == labels[held]).mean())
    return float(np.mean(accs))


def _log_loss(scores: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy of ``labels`` under softmax(``scores``), and its gradient in ``scores``."""
    z = scores - scores.max(1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(1))
    rows = np.arange(len(labels))
    grad = np.exp(z - log_sum[:, None])
    grad[rows, labels] -= 1
    return float(-(z[rows, labels] - log_sum).mean()), grad / len(labels)


def fusion_rules(probs: list[np.ndarray], labels: np.ndarray) -> dict:
    """Fusion rules beyond the score-fusion stage's, each fitted on ``probs``/``labels``: name →
    function of a list of member scores returning fused scores (argmax = the class). Measured by
    ``--rules`` against the stage's own mean and weights; none is in the product (docs/results.md)."""
    from scipy.optimize import minimize

    def logs(p):  # log scores in float64, kept finite where a probability is 0
        return np.log(np.asarray(p, dtype=np.float64) + 1e-12)

    w = fit_weights(probs, labels)
    member_logs = logs(probs)

    def log_weights_loss(z):  # non-negative weights exp(z) on log scores: a weighted product of experts
        loss, grad = _log_loss(np.tensordot(np.exp(z), member_logs, 1), labels)
        return loss, np.exp(z) * np.einsum("mnc,nc->m", member_logs, grad)

    log_w = np.exp(minimize(log_weights_loss, np.full(len(probs), -np.log(len(probs))), jac=True,
                            method="L-BFGS-B").x)

    def weighted_logs(p):
        return logs(fuse_scores(p, "weighted", w))

    fitted_weighted_logs = weighted_logs(probs)

    def offsets_loss(b):  # one additive offset per class on the weighted fusion's log scores
        loss, grad = _log_loss(fitted_weighted_logs + b, labels)
        return loss, grad.sum(0)

    offsets = minimize(offsets_loss, np.zeros(fitted_weighted_logs.shape[1]), jac=True, method="L-BFGS-B").x
    return {
        "mean": lambda p: fuse_scores(p, "mean"),
        "geometric mean": lambda p: logs(p).mean(0),
        "weights (the stage's weighted)": lambda p: fuse_scores(p, "weighted", w),
        "weights on log scores": lambda p: np.tensordot(log_w, logs(p), 1),
        "weights + class offsets": lambda p: weighted_logs(p) + offsets,
    }


def rule_accuracies(members: list[str], folds: int = 2, shuffles: int = 20, choose: str = "public_test",
                    report: str = "private_test") -> dict:
    """rule → (``report`` accuracy with the rule fitted on all of ``choose``, mean held-out accuracy
    on ``choose``'s folds with it fitted on the rest)."""
    loaded = [load_npz(m) for m in members]
    fit_p, fit_y = [z[f"{choose}_probs"] for z in loaded], loaded[0][f"{choose}_labels"]
    rep_p, rep_y = [z[f"{report}_probs"] for z in loaded], loaded[0][f"{report}_labels"]
    rows = {name: [100 * (rule(rep_p).argmax(1) == rep_y).mean(), []]
            for name, rule in fusion_rules(fit_p, fit_y).items()}
    for fit, held in _folds(len(fit_y), folds, shuffles):
        for name, rule in fusion_rules([p[fit] for p in fit_p], fit_y[fit]).items():
            rows[name][1].append(100 * (rule([p[held] for p in fit_p]).argmax(1) == fit_y[held]).mean())
    return {name: (acc, float(np.mean(cv))) for name, (acc, cv) in rows.items()}


def _mean_accs(loaded, subset, *splits):
    labels = loaded[subset[0]]
    return [100 * (fuse_scores([loaded[m][f"{s}_probs"] for m in subset], "mean").argmax(1)
                   == labels[f"{s}_labels"]).mean() for s in splits]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+", help="kept .npz files (at least two); with --join, the candidates; "
                    "with --cv, pipelines")
    ap.add_argument("--join", type=Path, help="a pipeline whose score-fusion members to extend, one candidate at a time")
    ap.add_argument("--pick", action="store_true", help="per network, the kept file best on --choose")
    ap.add_argument("--cv", type=int, metavar="K", help="K-fold accuracy of each pipeline's fitted weights on --choose")
    ap.add_argument("--rules", action="store_true", help="compare fusion rules on each pipeline's members: "
                    "--report accuracy fitted on --choose, and K-fold accuracy on --choose (K from --cv, default 2)")
    ap.add_argument("--choose", default="public_test", help="split to rank the subsets by")
    ap.add_argument("--report", default="private_test", help="split to report beside it")
    ap.add_argument("--top", type=int, default=10, help="how many subsets to print")
    args = ap.parse_args()
    if args.cv is not None and args.cv < 2:
        ap.error(f"--cv {args.cv}: K must be 2 or more (K-1 folds fit the weights, one is held out)")
    if args.pick:
        for choose_acc, f in pick_per_network(args.members, args.choose):
            print(f"{choose_acc:6.2f}  {f}")
        return
    if args.rules:
        for pipeline in args.members:
            members = pipeline_members(Path(pipeline))
            print(f"{pipeline} ({len(members)} members): {args.report} (fitted on {args.choose}), "
                  f"{args.cv or 2}-fold on {args.choose}")
            for name, (acc, cv) in rule_accuracies(members, args.cv or 2, choose=args.choose, report=args.report).items():
                print(f"{acc:8.2f} {cv:8.2f}  {name}")
        return
    if args.cv:
        for pipeline in args.members:
            members = pipeline_members(Path(pipeline))
            print(f"{cv_accuracy(members, args.cv, split=args.choose):6.2f}  {pipeline} "
                  f"({len(members)} members; weighted fusion, {args.cv}-fold on {args.choose})")
        return
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
