"""head: train a classifier head on saved feature vectors — paper 001's hybrid (MobileNetV2
pooled features + HOG/LBP → BN → 512 → 256 → 7), or any fusion of stages' features without
running their backbones again. Same outputs as ``train``.

Inputs: ``features``: a list of ``<stage>.features`` references, concatenated in that order.
The config is a training config whose ``model.net`` is a ``FeatureHead`` and whose ``data`` is a
``FeaturesDataModule`` (``keys`` picks ``features`` or ``pooled`` per input); the stage fills in
the file paths and the head's input width.
"""

import copy

import numpy as np

from fer_lightning.artifacts import npz_array_shape
from fer_lightning.errors import UserError
from stages import train

OUTPUTS = train.OUTPUTS
SHARED = ("seed", "trainer")


def run(ctx):
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
    keys = data["init_args"].get("keys", "features")
    keys = [keys] * len(paths) if isinstance(keys, str) else keys
    if len(keys) != len(paths):
        raise UserError(f"stages.{ctx.name}: data.init_args.keys: {len(keys)} keys for {len(paths)} inputs")
    width = 0
    for path, key in zip(paths, keys):  # from the array headers: the data module loads the arrays once
        shape = npz_array_shape(path, f"train_{key}")
        if shape is None:
            raise UserError(f"{path}: no 'train_{key}' array")
        width += int(np.prod(shape[1:]))
    net.setdefault("init_args", {})["in_features"] = width
    return train.train_and_export(ctx, cfg)
