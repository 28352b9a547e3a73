"""train: fit a classifier (best checkpoint by validation accuracy), then write per-split
probabilities, last-fc features and metrics for the downstream stages.

Inputs (optional): ``teacher``: a ``<stage>.probs`` reference (a trained model or a score-fusion
ensemble) to distil from: it becomes ``data.init_args.teacher_probs`` (any image data module).
``init``: a ``<stage>.checkpoint`` reference (or a checkpoint file) whose net starts this training
(fine-tuning, e.g. FER2013 → JAFFE): it becomes ``model.init_weights``.

The stage config is a LightningCLI config (``model``, ``data``, ``trainer``, ``checkpoint``,
``seed_everything``): the same file runs alone with ``fer-lightning train fit --config``.
An interrupted run resumes from ``checkpoints/last.ckpt`` when its key is unchanged (``trainer.max_time``
aside: a run stopped by its time limit continues when re-run with a longer one).
"""

import copy
import io
import json
import shutil
import sys
from argparse import ArgumentError
from pathlib import Path

import yaml

from fer_lightning.artifacts import atomic_save_npz, atomic_write_bytes, atomic_write_json, atomic_write_text
from fer_lightning.config import instantiate
from fer_lightning.errors import UserError
from fer_lightning.pipeline.processes import is_rank_zero
from fer_lightning.tracking import log_lineage, make_logger

# torch and Lightning are imported inside the functions: the runner imports every stage module to
# validate a pipeline, and a fully cached run should not pay ~10 s of imports.

OUTPUTS = {"checkpoint": "model.ckpt", "probs": "probs.npz", "features": "features.npz",
           "metrics": "metrics.json"}
SHARED = ("seed", "trainer", "data")  # what the pipeline's shared settings give this kind


def run(ctx):
    return train_and_export(ctx, _with_inputs(ctx.name, ctx.config, ctx.inputs))


def check(name: str, config: dict, inputs) -> None:
    """Parse the stage's config as its training will (the runner calls this for every stage about to
    run, before the first one starts: a wrong key or class fails at once, not hours later), and
    make its optimiser and learning-rate schedule on a stand-in parameter, so that a value torch
    refuses (a negative learning rate, a plateau ``factor`` of 1) fails here too rather than when
    the stage's fit starts."""
    parse_config(name, _with_inputs(name, config, inputs))
    model = config.get("model") or {}
    optimizer, scheduler = model.get("optimizer"), model.get("scheduler")
    if optimizer is not None and not isinstance(optimizer, dict):
        return  # given another way than class_path + init_args: parse_config has checked it
    if optimizer is None and not isinstance(scheduler, dict):
        return  # the module's defaults: nothing of the user's to build
    import torch

    from fer_lightning.module import default_optimizer

    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = instantiate(optimizer, f"stages.{name}.model.optimizer", params) if optimizer else default_optimizer(params)
    if isinstance(scheduler, dict):
        instantiate(scheduler, f"stages.{name}.model.scheduler", opt)


def prepare_data(name: str, config: dict, seen: set) -> None:
    """The stage's ``LightningDataModule.prepare_data``, run by the runner once per distinct data
    config before the first stage starts: stages started side by side then load FER2013's parsed
    cache instead of each parsing the CSV, and a bad row or folder is one error before anything
    trains (``TensorDataModule.prepare_data``)."""
    key = json.dumps(config.get("data"), sort_keys=True, default=str)
    if config.get("data") and key not in seen:
        seen.add(key)
        data_module_for_reading(name, config["data"]).prepare_data()


def data_module_for_reading(name: str, data: dict):
    """The data module of a stage's ``data`` spec, built without its augmentation (a class spec of
    its own, which reading the images does not need)."""
    if isinstance(data, dict):  # anything else: instantiate's error
        data = {**data, "init_args": {k: v for k, v in (data.get("init_args") or {}).items() if k != "augment"}}
    return instantiate(data, f"stages.{name}.data")


def _with_inputs(name: str, cfg: dict, inputs) -> dict:
    """The stage config with its inputs in their config keys."""
    if not inputs:
        return cfg
    if not isinstance(inputs, dict) or not set(inputs) <= {"teacher", "init"}:
        raise UserError(f"stages.{name}.inputs: a train stage takes {{teacher: <stage>.probs}} and "
                        f"{{init: <stage>.checkpoint}}, nothing else")
    cfg = copy.deepcopy(cfg)
    if "teacher" in inputs:
        cfg.setdefault("data", {}).setdefault("init_args", {})["teacher_probs"] = inputs["teacher"]
    if "init" in inputs:
        cfg.setdefault("model", {})["init_weights"] = inputs["init"]
    return cfg


def parse_config(name: str, cfg: dict, build: bool = False, logger=None):
    """The LightningCLI of ``cfg``: parsed and validated only, or with ``build`` its model, data
    module and trainer built too. An invalid config is a one-line UserError naming the stage and key."""
    from fer_lightning.train_cli import FERLightningCLI, ParseOnlyCLI

    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "max_steps"):
        if trainer.get(key) == 0:
            raise UserError(f"stages.{name}.trainer.{key}: 0 trains nothing; a training stage needs at least one epoch")
    _check_gpus(name, trainer)
    cls, kwargs = (FERLightningCLI, {"logger": logger}) if build else (ParseOnlyCLI, {})
    argv, sys.argv = sys.argv, sys.argv[:1]  # the config comes from `args`, not the command line
    try:
        # a copy: jsonargparse replaces parts of the mapping it parses (callbacks become Namespaces)
        return cls(run=False, args=copy.deepcopy(cfg), save_config_callback=None,
                   parser_kwargs={"exit_on_error": False}, **kwargs)
    except (ArgumentError, ValueError, TypeError) as e:
        raise UserError(f"stages.{name}: invalid config: {_one_line(str(e))}") from None
    finally:
        sys.argv = argv


def _check_gpus(name: str, trainer: dict) -> None:
    """A GPU trainer on a machine without (enough) GPUs fails here, before any stage runs, rather
    than in each stage's Trainer."""
    if str(trainer.get("accelerator")).lower() not in ("gpu", "cuda"):
        return
    import torch

    have, devices = torch.cuda.device_count(), trainer.get("devices", "auto")
    wanted = 1  # "auto", -1, "0,1": at least one
    if isinstance(devices, list):
        wanted = len(devices)
    elif isinstance(devices, int) and devices > 0:
        wanted = devices
    if wanted > have:
        raise UserError(f"stages.{name}.trainer: accelerator '{trainer['accelerator']}' with devices {devices}, "
                        f"but torch finds {have} CUDA GPU(s) here (set trainer.accelerator: auto or cpu)")


# jsonargparse explains a value that fits no type of an Optional[...] union at length: the union,
# every alternative ("Expected a <class 'NoneType'>") and the whole value given. What is left of
# its nested message is the path to the key and what is wrong with it.
_UNION_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
                "- Expected a <class 'NoneType'>", "Given value type:")


def _one_line(message: str) -> str:
    kept = []
    for line in (raw.strip() for raw in message.splitlines()):
        if not line or line.startswith(_UNION_NOISE) or (line.startswith("Given value:") and len(line) > 60):
            continue
        kept.append(line.removeprefix("- "))
    return " ".join(kept)


def train_and_export(ctx, cfg: dict, complete_checkpoint=None) -> dict:
    """Fit, then write the outputs. ``complete_checkpoint(ckpt)`` may add to the exported
    checkpoint dict before it is written (the ``head`` stage adds its image-level network)."""
    import torch

    cfg = copy.deepcopy(cfg)
    if is_rank_zero():  # the fully resolved config: `fer-lightning train fit --config` runs it alone
        atomic_write_text(ctx.out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    ckpt_dir = ctx.out_dir / "checkpoints"
    cfg.setdefault("trainer", {})["default_root_dir"] = str(ctx.out_dir)
    cfg.setdefault("checkpoint", {})["dirpath"] = str(ckpt_dir)
    last, key_file = ckpt_dir / "last.ckpt", ctx.out_dir / "run_key"
    run_key = ctx.resume_key or ctx.key  # a longer trainer.max_time continues the same training
    resume = last.is_file() and key_file.is_file() and key_file.read_text() == run_key and _loadable(last)
    if not resume and is_rank_zero():
        # checkpoints of another config must not be resumed, nor its CSV logs sit beside this run's
        for stale in (ckpt_dir, ctx.out_dir / "csv_logs"):
            if stale.exists():
                shutil.rmtree(stale)

    logger = make_logger(ctx.out_dir, name=ctx.name, group=ctx.group, job_type=ctx.kind, config=cfg)
    cli = parse_config(ctx.name, cfg, build=True, logger=logger)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    if trainer.is_global_zero:
        atomic_write_text(key_file, run_key)
    if resume:
        print(f"[{ctx.name}] resuming from {last}")
    trainer.fit(model, datamodule=dm, ckpt_path=str(last) if resume else None)
    if not trainer.is_global_zero:
        return {}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # The export below is this process's alone and the other DDP ranks have returned: left in
        # the process group, the predictor's prepare_data barrier would wait for them forever.
        torch.distributed.destroy_process_group()

    best = trainer.checkpoint_callback.best_model_path or str(last)
    if not Path(best).is_file():  # the fit ran no epoch to its end
        raise UserError(f"stages.{ctx.name}: no epoch of training ran to its end, so there is no model "
                        f"(see trainer.max_epochs, max_steps, max_time, limit_train_batches)")
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    slim = {k: ckpt[k] for k in ("state_dict", "hyper_parameters", "epoch", "global_step",
                                 "pytorch-lightning_version") if k in ckpt}
    if complete_checkpoint is not None:
        complete_checkpoint(slim)
    buf = io.BytesIO()
    torch.save(slim, buf)
    atomic_write_bytes(ctx.output("checkpoint"), buf.getvalue())

    probs, feats, metrics = export_predictions(model, dm, cfg["trainer"].get("accelerator", "auto"))
    metrics["best_epoch"] = int(ckpt.get("epoch", -1))
    # fewer than trainer.max_epochs when early stopping or trainer.max_time ended the fit
    metrics["epochs_trained"] = int(trainer.current_epoch)
    atomic_save_npz(ctx.output("probs"), **probs)
    atomic_save_npz(ctx.output("features"), **feats)
    atomic_write_json(ctx.output("metrics"), metrics)

    summary = {f"{split}/acc": m["acc"] for split, m in metrics.items() if isinstance(m, dict)}
    logger.log_metrics({f"final/{k}": v for k, v in summary.items()})
    if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
        run = logger.experiment
        log_lineage(run, ctx.name, ctx.pipeline, ctx.input_refs,
                    {n: ctx.output(n) for n in OUTPUTS})
        run.finish()
    else:
        logger.finalize("success")
    return summary


def export_predictions(model, dm, accelerator="auto"):
    """Probabilities, last-fc features and scores for every split of the data module."""
    import lightning as L

    from fer_lightning.metrics import score
    from fer_lightning.module import collate_predictions

    predictor = L.Trainer(accelerator=accelerator if accelerator in ("cpu", "gpu", "cuda", "mps") else "auto",
                          devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, enable_checkpointing=False)
    probs, feats, metrics = {}, {}, {}
    dm.setup()
    for split in dm.eval_splits:
        if split not in dm.splits:
            continue
        dm.predict_split = split
        out = collate_predictions(predictor.predict(model, datamodule=dm))
        p, f, y = out["probs"], out["features"], out["labels"]
        probs[f"{split}_probs"], probs[f"{split}_labels"] = p, y
        feats[f"{split}_features"], feats[f"{split}_labels"] = f, y
        if "pooled" in out:
            feats[f"{split}_pooled"] = out["pooled"]
        metrics[split] = score(p, y, p.shape[1])
    dm.predict_split = "test"
    return probs, feats, metrics


def _loadable(path) -> bool:
    """A checkpoint torn by a crash is not resumed from (training restarts instead)."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
        return True
    except Exception:
        print(f"warning: {path} is unreadable (interrupted write?); training starts over")
        return False


