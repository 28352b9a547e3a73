"""fuse: the fusion network of paper 000 — upstream checkpoints frozen and concatenated, a linear
head trained on top (``fer_lightning.models.FusionNet``). Same outputs as ``train``.

Inputs: ``backbones``: a list of ``<stage>.checkpoint`` references. The config is a training
config whose ``model.net`` is a FusionNet; the runner fills in its ``checkpoints``.
"""

import copy

from fer_lightning.errors import UserError
from stages import train

OUTPUTS = train.OUTPUTS
SHARED = train.SHARED
prepare_data = train.prepare_data


def run(ctx):
    return train.train_and_export(ctx, _complete(ctx.name, ctx.config, ctx.inputs))


def check(name: str, config: dict, inputs) -> None:
    """As train.check."""
    train.parse_config(name, _complete(name, config, inputs))


def _complete(name: str, config: dict, inputs) -> dict:
    cfg = copy.deepcopy(config)
    backbones = inputs.get("backbones") if isinstance(inputs, dict) else None
    if not backbones:
        raise UserError(f"stages.{name}.inputs.backbones: list the checkpoints to fuse, "
                        f"e.g. [cnn1.checkpoint, cnn2.checkpoint]")
    try:
        net = cfg["model"]["net"]
    except (KeyError, TypeError):
        raise UserError(f"stages.{name}: config needs model.net (a FusionNet)")
    net.setdefault("init_args", {})["checkpoints"] = list(backbones)
    return cfg
