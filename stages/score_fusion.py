"""score_fusion: combine saved class probabilities of several models, no retraining
(paper 000, eqs. 10–13): ``max`` takes the element-wise maximum, ``mean`` the average; the class
is the argmax of the fused vector. ``weighted`` is a weighted average whose weights (non-negative,
summing to 1) minimise the log-loss on ``fit_split`` — a split the reported numbers must not be
(default ``public_test`` when present, else ``val``).

Inputs: ``members``: a list of ``<stage>.probs`` references.
Params: ``methods`` (default ``[max, mean]``), ``fit_split``.
"""

import numpy as np

from fer_lightning.artifacts import atomic_save_npz, atomic_write_json, load_npz
from fer_lightning.ensemble import METHODS, fit_weights, fuse_scores
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage

OUTPUTS = {"probs": "probs.npz", "metrics": "metrics.json"}
PARAMS = ("methods", "fit_split")  # what params may hold


def check(name: str, config: dict, inputs) -> list:
    """The members and methods, checked before the pipeline's first stage runs."""
    members = inputs.get("members") if isinstance(inputs, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise UserError(f"stages.{name}.inputs.members: list at least two '<stage>.probs' references")
    methods = config.get("methods", ["max", "mean"])
    unknown = [m for m in methods if m not in METHODS and m != "weighted"] if isinstance(methods, list) else [methods]
    if unknown or not methods:
        raise UserError(f"stages.{name}.params.methods: expected a list of {', '.join(METHODS)}, weighted "
                        f"(got {methods!r})")
    return methods


def run(ctx):
    from fer_lightning.metrics import score  # imports torch: only when the stage runs

    methods = check(ctx.name, ctx.config, ctx.inputs)
    members = ctx.inputs["members"]
    loaded = [load_npz(p) for p in members]
    splits = [k[: -len("_probs")] for k in loaded[0] if k.endswith("_probs")
              and all(k in m for m in loaded)]
    # Members from different pipelines may hold different train/val splits (a 10 % validation
    # cut of Training in one, PublicTest in another): those splits are left out and said so; a
    # split must hold the same labels in every member to be fused.
    misaligned = {s: i for s in splits for i, m in enumerate(loaded[1:], start=1)
                  if not np.array_equal(m[f"{s}_labels"], loaded[0][f"{s}_labels"])}
    splits = [s for s in splits if s not in misaligned]
    if not splits:
        s, i = next(iter(misaligned.items()))
        raise UserError(f"{members[i]}: split '{s}' is not aligned with {members[0]} (different labels), "
                        f"nor is any other split: the members were evaluated on different data")
    if misaligned:
        print(f"[{ctx.name}] split(s) {', '.join(misaligned)} differ between members (different labels): "
              f"fused on {', '.join(splits)} only")
    probs, metrics = {}, {m: {} for m in methods}
    weights = None
    if "weighted" in methods:
        fit = ctx.config.get("fit_split") or ("public_test" if "public_test" in splits else "val")
        if fit not in splits:
            raise UserError(f"stages.{ctx.name}.params.fit_split: the members have no '{fit}' split "
                            f"(they have {', '.join(splits)})")
        weights = fit_weights([m[f"{fit}_probs"] for m in loaded], loaded[0][f"{fit}_labels"])
        metrics["weighted"] = {"weights": weights.tolist(), "fit_split": fit}
    for split in splits:
        labels = loaded[0][f"{split}_labels"]
        probs[f"{split}_labels"] = labels
        for method in methods:
            fused = fuse_scores([m[f"{split}_probs"] for m in loaded], method, weights)
            probs[f"{method}_{split}_probs"] = fused
            metrics[method][split] = score(fused, labels, fused.shape[1])
    atomic_save_npz(ctx.output("probs"), **probs)
    atomic_write_json(ctx.output("metrics"), metrics)
    summary = {f"{m}/{s}/acc": metrics[m][s]["acc"] for m in methods for s in splits}
    if weights is not None:
        summary.update({f"weighted/weight_{i}": float(w) for i, w in enumerate(weights)})
    log_stage(ctx, summary, {n: ctx.output(n) for n in OUTPUTS})
    return summary
