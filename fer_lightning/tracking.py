"""Weights & Biases, offline by default, and never required.

W&B runs offline unless the user sets ``WANDB_MODE`` (``online`` to sync, ``disabled`` to turn it
off); offline mode never opens a network connection, so nothing can hang without one. Without the
``wandb`` package, or with ``FER_WANDB=off``, metrics go to CSV files instead.
"""

import os
import re
from pathlib import Path

PROJECT = os.environ.get("WANDB_PROJECT", "fer_lightning")


def wandb_enabled() -> bool:
    if os.environ.get("FER_WANDB", "").lower() in ("off", "0", "false") or \
            os.environ.get("WANDB_MODE") == "disabled":
        return False
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


def _prepare_env():
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def make_logger(save_dir, name=None, group=None, job_type=None, config=None):
    """A Lightning logger: ``WandbLogger`` when W&B is enabled, else ``CSVLogger``."""
    from lightning.pytorch.loggers import CSVLogger

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if not wandb_enabled():
        return CSVLogger(save_dir, name="csv_logs")
    _prepare_env()
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=PROJECT, name=name, group=group, job_type=job_type, config=config,
                       save_dir=str(save_dir), log_model=False)


def start_run(save_dir, name, group, job_type, config=None):
    """A plain W&B run for stages that do not train (score fusion, probes, report), or None."""
    if not wandb_enabled():
        return None
    _prepare_env()
    import wandb

    return wandb.init(project=PROJECT, name=name, group=group, job_type=job_type, config=config,
                      dir=str(save_dir), reinit="create_new")


def artifact_name(pipeline: str, stage: str, output: str) -> str:
    """W&B allows letters, digits, ``-``, ``_`` and ``.`` in artifact names; foreach copies are
    named ``stage@value``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{pipeline}-{stage}-{output}")


def log_lineage(run, stage: str, pipeline: str, inputs: dict, outputs: dict):
    """Declare the stage's inputs as used artifacts and its outputs as logged artifacts, so W&B's
    lineage graph is the pipeline DAG. ``inputs``/``outputs`` map artifact names to paths."""
    if run is None:
        return
    import wandb

    names = {ref: artifact_name(pipeline, *ref.rsplit(".", 1)) for ref in inputs}
    if run.offline:
        # W&B refuses use_artifact offline; record the inputs so the lineage is still readable.
        run.config.update({"input_artifacts": names}, allow_val_change=True)
    else:
        for ref, path in inputs.items():
            art = wandb.Artifact(names[ref], type=ref.split(".")[-1])
            art.add_file(str(path))
            run.use_artifact(art)
    for name, path in outputs.items():
        art = wandb.Artifact(artifact_name(pipeline, stage, name), type=name)  # = names[] downstream
        p = Path(path)
        art.add_dir(str(p)) if p.is_dir() else art.add_file(str(p))
        run.log_artifact(art)


def log_stage(ctx, summary: dict, outputs: dict, extra=None):
    """One W&B run for a stage that does not train: summary metrics, lineage, then ``extra(run)``
    for anything else (tables, images). Nothing happens when W&B is off."""
    run = start_run(ctx.out_dir, ctx.name, ctx.group, ctx.kind, ctx.config)
    if run is None:
        return
    run.log(summary)
    if extra is not None:
        extra(run)
    log_lineage(run, ctx.name, ctx.pipeline, ctx.input_refs, outputs)
    run.finish()
