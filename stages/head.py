"""head: train a classifier head on saved feature vectors — paper 001's hybrid (MobileNetV2
pooled features + HOG/LBP → BN → 512 → 256 → 7), or any fusion of stages' features without
running their backbones again. Same outputs as ``train``.

Inputs: ``features``: a list of ``<stage>.features`` references, concatenated in that order.
The config is a training config whose ``model.net`` is a ``FeatureHead`` and whose ``data`` is a
``FeaturesDataModule`` (``keys`` picks ``features`` or ``pooled`` per input); the stage fills in
the file paths and the head's input width.
"""

import copy

from fer_lightning.errors import UserError
from stages import train

OUTPUTS = train.OUTPUTS
SHARED = ("seed", "trainer")


def run(ctx):
    from fer_lightning.data.features import FeaturesDataModule

    cfg = copy.deepcopy(ctx.config)
    paths = (ctx.inputs or {}).get("features") if isinstance(ctx.inputs, dict) else None
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise UserError(f"stages.{ctx.name}.inputs.features: list the features to train on, "
                        f"e.g. [mobilenet.features, hog_lbp.features]")
    data = cfg.setdefault("data", {"class_path": "fer_lightning.data.FeaturesDataModule"})
    data.setdefault("init_args", {})["paths"] = list(paths)
    try:
        net = cfg["model"]["net"]
    except (KeyError, TypeError):
        raise UserError(f"stages.{ctx.name}: config needs model.net (a FeatureHead)")
    args = {k: v for k, v in data["init_args"].items() if k in ("paths", "keys")}
    net.setdefault("init_args", {})["in_features"] = FeaturesDataModule(**args).feature_dim
    return train.train_and_export(ctx, cfg)
