"""head: train a classifier head on saved feature vectors — paper 001's hybrid (MobileNetV2
pooled features + HOG/LBP → BN → 512 → 256 → 7), or any fusion of stages' features without
running their backbones again. Same outputs as ``train``.

Inputs: ``features``: a list of ``<stage>.features`` references, concatenated in that order;
optionally ``backbones``: the ``<stage>.checkpoint`` of each, in the same order. With them, the
checkpoint also holds the image-level network (a ``FusionNet``: the frozen backbones, their
features concatenated, this head), so ``evaluate`` and ``predict`` take it like any model.
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
    cfg, paths, keys, backbones = _complete(ctx.name, ctx.config, ctx.inputs)
    width = 0
    for path, key in zip(paths, keys):  # from the array headers: the data module loads the arrays once
        shape = npz_array_shape(path, f"train_{key}")
        if shape is None:
            raise UserError(f"{path}: no 'train_{key}' array")
        width += int(np.prod(shape[1:]))
    cfg["model"]["net"]["init_args"]["in_features"] = width
    add = (lambda ckpt: add_image_net(ckpt, backbones, keys[0], width, ctx.name)) if backbones else None
    return train.train_and_export(ctx, cfg, complete_checkpoint=add)


def check(name: str, config: dict, inputs) -> None:
    """As train.check; the head's input width, known once the features exist, is a placeholder."""
    cfg = _complete(name, config, inputs)[0]
    cfg["model"]["net"]["init_args"]["in_features"] = 1
    train.parse_config(name, cfg)


def _complete(name: str, config: dict, inputs):
    """The config with the feature files filled in, the files, their keys and the backbones."""
    cfg = copy.deepcopy(config)
    paths = (inputs or {}).get("features") if isinstance(inputs, dict) else None
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise UserError(f"stages.{name}.inputs.features: list the features to train on, "
                        f"e.g. [mobilenet.features, hog_lbp.features]")
    data = cfg.setdefault("data", {"class_path": "fer_lightning.data.FeaturesDataModule"})
    data.setdefault("init_args", {})["paths"] = list(paths)
    try:
        cfg["model"]["net"].setdefault("init_args", {})
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"stages.{name}: config needs model.net (a FeatureHead)")
    keys = data["init_args"].get("keys", "features")
    keys = [keys] * len(paths) if isinstance(keys, str) else keys
    if len(keys) != len(paths):
        raise UserError(f"stages.{name}: data.init_args.keys: {len(keys)} keys for {len(paths)} inputs")
    backbones = inputs.get("backbones")
    if backbones is not None:
        backbones = [backbones] if isinstance(backbones, str) else list(backbones)
        if len(backbones) != len(paths) or len(set(keys)) != 1:
            raise UserError(f"stages.{name}.inputs.backbones: one checkpoint per features input "
                            f"({len(paths)}), all of the same layer (data.init_args.keys: {keys})")
    return cfg, paths, keys, backbones


def add_image_net(ckpt: dict, backbones: list[str], layer: str, width: int, name: str):
    """Add to the head's checkpoint the FusionNet that computes the same scores from images."""
    from fer_lightning.checkpoints import net_spec
    from fer_lightning.models import FusionNet

    head = ckpt["hyper_parameters"]["net"]["init_args"]
    net = FusionNet(checkpoints=backbones, hidden=head["hidden"], dropout=head["dropout"], layer=layer,
                    input_batchnorm=head["input_batchnorm"], num_classes=head["num_classes"])
    state = {k: v for k, v in net.state_dict().items() if k.startswith("backbones.")}
    for k, v in ckpt["state_dict"].items():  # FeatureHead.features.i -> FusionNet.head.i
        if k.startswith("net.features."):
            state["head." + k[len("net.features."):]] = v
        elif k.startswith("net.classifier."):
            state[k[len("net."):]] = v
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"stages.{name}.inputs.backbones: these checkpoints do not give the "
                        f"{width} features the head was trained on: {str(e).splitlines()[0]}")
    ckpt["image_net"] = {"net": net_spec(net), "state_dict": net.state_dict()}
