"""handcrafted: HOG + uniform-LBP descriptors of every split (paper 001 §3.3.2), z-scored and
reduced with PCA — both fitted on the training split only — saved as a ``features.npz`` artifact
that the ``probe`` stage (SVM/KNN on LBP+HOG) and the ``head`` stage (deep + handcrafted) read.

Config (besides the pipeline's shared ``data`` and ``seed``):
  hog: skimage.feature.hog settings (default: 9 orientations, 8×8 cells, 2×2 blocks), or null
  lbp: {P: 8, R: 1, grid: 7} (uniform LBP histograms on a grid×grid tiling), or null
  pca: n_components for sklearn PCA — a fraction of variance to keep (default 0.95), a number of
       components, or null for no PCA
"""

import time

from fer_lightning.artifacts import atomic_save_npz, atomic_write_json
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage
from stages import train

OUTPUTS = {"features": "features.npz", "metrics": "metrics.json"}
PARAMS = ("hog", "lbp", "pca")  # what params may hold (besides the shared seed and data)
SHARED = ("seed", "data")
prepare_data = train.prepare_data


def check(name: str, config: dict, inputs) -> None:
    """Describe one blank face of the data's size with the stage's settings, before any stage
    runs: a misspelt or refused HOG/LBP setting (``orientation: 9``, cells larger than the face)
    fails at once, not after the CNNs have trained."""
    import numpy as np

    from fer_lightning.handcrafted import hog_lbp

    size = ((config.get("data") or {}).get("init_args") or {}).get("image_size", 48)
    try:
        hog_lbp(np.zeros((1, size, size), np.uint8), config.get("hog", {}), config.get("lbp", {}))
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"stages.{name}.params: hog/lbp settings: {e}") from None
    pca = config.get("pca", 0.95)
    if pca is not None and (isinstance(pca, bool) or not isinstance(pca, (int, float)) or pca <= 0):
        raise UserError(f"stages.{name}.params.pca: {pca!r}: expected a share of variance in (0, 1), a number "
                        f"of components, or null")


def run(ctx):
    check(ctx.name, ctx.config, ctx.inputs)
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from fer_lightning.handcrafted import hog_lbp

    cfg = ctx.config
    if not cfg.get("data"):
        raise UserError(f"stages.{ctx.name}: needs a data module (the pipeline's 'data')")
    dm = train.data_module_for_reading(ctx.name, cfg["data"])
    dm.setup()
    hog, lbp = cfg.get("hog", {}), cfg.get("lbp", {})
    t0 = time.perf_counter()
    raw = {s: hog_lbp(dm.splits[s][0].numpy(), hog, lbp) for s in dm.eval_splits if s in dm.splits}
    seconds = time.perf_counter() - t0
    steps = [StandardScaler().fit(raw["train"])]
    if cfg.get("pca", 0.95) is not None:
        steps.append(PCA(n_components=cfg.get("pca", 0.95), svd_solver="full",
                         random_state=cfg.get("seed", 0)).fit(steps[0].transform(raw["train"])))
    out = {}
    for s, x in raw.items():
        for step in steps:
            x = step.transform(x)
        out[f"{s}_features"] = x.astype(np.float32)
        out[f"{s}_labels"] = dm.splits[s][1].numpy()
    atomic_save_npz(ctx.output("features"), **out)
    metrics = {"raw_dim": int(raw["train"].shape[1]), "dim": int(out["train_features"].shape[1]),
               "images": int(sum(len(x) for x in raw.values())), "extract_seconds": round(seconds, 2)}
    if len(steps) == 2:
        metrics["pca_explained_variance"] = float(steps[1].explained_variance_ratio_.sum())
    atomic_write_json(ctx.output("metrics"), metrics)
    log_stage(ctx, metrics, {n: ctx.output(n) for n in OUTPUTS})
    return metrics
