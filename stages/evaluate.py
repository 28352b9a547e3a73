"""evaluate: a trained model, or an ensemble of them, on any labelled faces — another dataset
(cross-dataset, as paper 002 does with its natural photos) or another split.

Inputs: ``models``: a list of ``<stage>.checkpoint`` references (several: score fusion).
Params: ``data``: a FER2013 CSV, a JAFFE folder or a folder of class folders; ``split`` (FER2013
only, default ``test``); ``fusion``: ``mean`` | ``max``; ``tta``: ``none``, ``flip``,
``flip_crops``, ``flip_crops_rotate_zoom``, ... (``fer_lightning.tta``); ``face_crop``: cut each
image of a folder to its largest face first (for photos of whole heads); ``ferplus``: a FER+ votes file (``fer2013new.csv``) to
score a FER2013 split against its majority vote instead of the original labels.
"""

from fer_lightning.ensemble import METHODS
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage

OUTPUTS = {"metrics": "metrics.json", "report": "report.md", "confusion": "confusion.png"}
PARAMS = ("data", "split", "fusion", "tta", "face_crop", "ferplus")  # what params may hold
FILE_PARAMS = ("data", "ferplus")  # files whose content is an input of the stage (its cache key)


def check(name: str, config: dict, inputs) -> list:
    """The models and params, checked before the pipeline's first stage runs; returns the models."""
    from fer_lightning.tta import TTA_MODES  # imports torch, as the stage itself will

    models = inputs.get("models") if isinstance(inputs, dict) else None
    models = [models] if isinstance(models, str) else models
    if not models:
        raise UserError(f"stages.{name}.inputs.models: list '<stage>.checkpoint' references")
    if not isinstance(config.get("data"), str):
        raise UserError(f"stages.{name}.params.data: the path of the faces to evaluate on")
    for key, allowed in (("fusion", METHODS), ("tta", TTA_MODES)):
        if key in config and config[key] not in allowed:
            raise UserError(f"stages.{name}.params.{key}: '{config[key]}' is not one of {', '.join(allowed)}")
    return models


def run(ctx):
    from fer_lightning.evaluate import evaluate

    models = check(ctx.name, ctx.config, ctx.inputs)
    m = evaluate(models, ctx.config["data"], ctx.out_dir, ctx.config.get("split"),
                 ctx.config.get("fusion", "mean"), ctx.config.get("tta", "none"),
                 face_crop=bool(ctx.config.get("face_crop", False)), ferplus=ctx.config.get("ferplus"))
    summary = {"acc": m["acc"], "f1": m["f1"], "n": m["n"], "excluded": sum(m["excluded_classes"].values())}
    log_stage(ctx, summary, {n: ctx.output(n) for n in OUTPUTS})
    return summary
