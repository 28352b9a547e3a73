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


def run(ctx):
    cfg = copy.deepcopy(ctx.config)
    backbones = (ctx.inputs or {}).get("backbones") if isinstance(ctx.inputs, dict) else None
    if not backbones:
        raise UserError(f"stages.{ctx.name}.inputs.backbones: list the checkpoints to fuse, "
                        f"e.g. [cnn1.checkpoint, cnn2.checkpoint]")
    try:
        net = cfg["model"]["net"]
    except (KeyError, TypeError):
        raise UserError(f"stages.{ctx.name}: config needs model.net (a FusionNet)")
    net.setdefault("init_args", {})["checkpoints"] = list(backbones)
    return train.train_and_export(ctx, cfg)
