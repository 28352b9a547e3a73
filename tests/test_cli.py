"""The ``fer-lightning`` command as a user runs it (real subprocesses)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

TINY = ["--data.init_args.num_train", "70", "--data.init_args.num_val", "35",
        "--data.init_args.num_test", "35", "--model.net.init_args.widths", "[4, 8, 8, 8]",
        "--model.net.init_args.fc", "[8, 8]", "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
CONFIGS = ["--config", "configs/trainer/cpu_quick.yaml", "--config", "configs/data/synthetic.yaml",
           "--config", "configs/models/cnn2.yaml"]


def fer(*args, env=None, timeout=300):
    e = {**os.environ, "FER_WANDB": "off", **(env or {})}
    if env and "FER_WANDB" in env:
        e.pop("WANDB_MODE", None)  # W&B's own default for the product: offline
    return subprocess.run([sys.executable, "-m", "fer_lightning", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def test_train_fit_validate_test_predict_and_print_config(tmp_path):
    root = ["--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    # limit_train_batches 1: one batch, as Trainer(limit_train_batches=1) in Python (Lightning's
    # float-first type made it 1.0, the whole epoch, through the CLI)
    r = fer("train", "fit", *CONFIGS, *TINY, *root, "--trainer.limit_train_batches", "1",
            "--data.init_args.batch_size", "16")
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = tmp_path / "ckpt" / "best.ckpt"
    assert ckpt.is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()
    import torch

    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 1
    for sub in ("validate", "test", "predict"):
        r = fer("train", sub, *CONFIGS, *TINY, *root, "--ckpt_path", str(ckpt))
        assert r.returncode == 0, (sub, r.stderr[-2000:])
        if sub == "test":
            tested = r.stdout
    assert "test/acc" in tested and "confusion matrix (rows: true class" in tested
    import numpy as np

    pred = np.load(tmp_path / "predictions.npz")  # written by `predict` (the test split)
    assert pred["probs"].shape == (35, 7) and pred["features"].shape == (35, 8)  # fc [8, 8]
    np.testing.assert_allclose(pred["probs"].sum(1), 1, rtol=1e-5)
    r = fer("train", "fit", *CONFIGS, "--print_config", "--trainer.limit_val_batches", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["trainer"]["limit_val_batches"] == 0.5  # a fraction stays one
    assert cfg["model"]["net"]["class_path"] == "fer_lightning.models.CNN2"
    assert cfg["data"]["class_path"] == "fer_lightning.data.SyntheticFacesDataModule"
    assert cfg["checkpoint"]["monitor"] == "val/acc"


def test_unknown_config_key_fails(tmp_path):
    r = fer("train", "fit", *CONFIGS, "--model.net.init_args.colour", "blue")
    assert r.returncode != 0 and "colour" in r.stderr
    # a trainer no machine here can run: Lightning's reason in one line, not its traceback
    r = fer("train", "fit", *CONFIGS, *TINY, "--trainer.accelerator", "gpu", "--trainer.devices", "64",
            "--trainer.default_root_dir", str(tmp_path))
    assert r.returncode == 2 and "error: trainer: " in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    # a value the model itself refuses: its reason in one line
    r = fer("train", "fit", *CONFIGS, *TINY, "--model.steps_per_execution", "0", "--trainer.default_root_dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: model.steps_per_execution: expected a whole number of 1 or more, got 0" in r.stderr


def test_a_config_file_with_a_key_given_twice_is_refused(tmp_path):
    """jsonargparse (PyYAML) would keep the second `trainer:` block and drop `accelerator: cpu`."""
    twice = tmp_path / "trainer.yaml"
    twice.write_text("trainer:\n  accelerator: cpu\ntrainer:\n  max_epochs: 3\n")
    r = fer("train", "fit", *CONFIGS, "--config", str(twice), "--print_config")
    assert r.returncode != 0 and "key 'trainer' given twice" in r.stderr and "line 3" in r.stderr, r.stderr[-2000:]
    assert "LightningCLI's args parameter" not in r.stderr and "usage: fer-lightning train" in r.stderr


def test_pipeline_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  a: {kind: train, inputs: {x: b.metrics}}\n  b: {kind: score_fusion, inputs: {y: a.metrics}}\n")
    r = fer("pipeline", "run", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "cycle" in r.stderr and "Traceback" not in r.stderr
    r = fer("pipeline", "run", "configs/pipelines/fer2013_fusion.yaml", "--data", str(tmp_path / "no.csv.gz"))
    assert r.returncode == 2 and "no.csv.gz: data file not found" in r.stderr


def test_version_and_unknown_commands():
    import fer_lightning

    r = fer("--version")
    assert r.returncode == 0 and r.stdout == f"fer-lightning {fer_lightning.__version__}\n"
    r = fer("trian")
    assert r.returncode == 2 and "unknown command 'trian'" in r.stderr


def test_counts_below_one_are_usage_errors(tmp_path):
    """--threads 0 used to mean the default, -1 failed inside a stage; --workers -2 meant 1."""
    for args in (["pipeline", "run", "configs/pipelines/fer2013_fusion_demo.yaml", "--threads", "0"],
                 ["predict", "--model", "m.ckpt", "photo.jpg", "--workers", "-2"],
                 ["predict", "--model", "m.ckpt", "photo.jpg", "--min-face", "x"]):
        r = fer(*args, "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and "is not a whole number of 1 or more" in r.stderr, (args, r.stderr[-500:])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_ddp_training_stage_on_cpu(tiny_pipeline, tmp_path, steps_per_execution):
    """A training stage with DDP (2 processes, gloo) through the pipeline runner, which gives
    such a stage its own process tree; on a FER2013 CSV, whose data module has a prepare_data
    (Lightning's barrier around it once made the export after a DDP fit wait forever). With
    ``steps_per_execution`` 2 the module steps its optimiser itself, one backward per batch,
    each synchronised across the processes (checked: the same weights as 1)."""
    from conftest import write_fer_csv

    usages = ["Training"] * 4 + ["PublicTest", "PrivateTest"]
    rows = [(i % 7, [(i * 37 + j) % 256 for j in range(2304)], usages[i % 6]) for i in range(210)]
    csv = write_fer_csv(tmp_path / "fer2013.csv", rows)
    out = tmp_path / "runs"
    r = fer("pipeline", "run", str(tiny_pipeline), "--data", str(csv), "--out", str(out), "--only", "cnn1",
            "--set", f"data.init_args.cache_dir={tmp_path / 'cache'}",
            "--set", "trainer.strategy=ddp", "--set", "trainer.devices=2", "--set", "trainer.accelerator=cpu",
            "--set", f"stages.cnn1.params.model.steps_per_execution={steps_per_execution}",
            timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "distributed_backend=gloo" in r.stdout + r.stderr
    assert "All distributed processes registered. Starting with 2 processes" in r.stdout + r.stderr
    manifest = json.loads((out / "cnn1" / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"checkpoint", "probs", "features", "metrics"}
    # each process trains on its half of the batches: 126 Training rows (10 % held out for
    # validation) are 4 batches of 35, so one epoch is 2 steps per process
    import torch
    ckpt = torch.load(out / "cnn1" / "model.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["steps_per_execution"] == steps_per_execution


def test_wandb_offline_never_needs_the_network(tiny_pipeline, tmp_path):
    """Real W&B, offline by default: with an unreachable server configured, the whole DAG still
    ends and every stage leaves its local W&B run (metrics, config, tables, artifacts)."""
    out = tmp_path / "runs"
    env = {"FER_WANDB": "on", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}
    r = fer("pipeline", "run", str(tiny_pipeline), "--out", str(out), env=env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ("cnn1", "cnn2", "cnn3", "fusion", "score_fusion", "probe", "report"):
        runs = list((out / stage / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, stage
        assert list(runs[0].glob("run-*.wandb")), f"no W&B run file for {stage}"


def test_wandb_lineage_of_foreach_copies(tmp_path, monkeypatch):
    """Foreach copies are named ``stage@value``, which W&B refuses in artifact names: a real
    offline run logs them under names it accepts, the same upstream and downstream."""
    from fer_lightning.tracking import log_lineage, start_run

    for k, v in {"FER_WANDB": "on", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "model.ckpt").write_bytes(b"weights")
    run = start_run(tmp_path, "mobilenet@0", "loso", "train")
    log_lineage(run, "mobilenet@0", "jaffe.loso", {"hog_lbp@0.features": tmp_path / "model.ckpt"},
                {"checkpoint": tmp_path / "model.ckpt"})
    assert run.config["input_artifacts"] == {"hog_lbp@0.features": "jaffe-loso-hog_lbp-0-features"}
    run.finish()


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned(monkeypatch, capsys, tmp_path):
    """bf16 autocast trains ~1.9x faster on a CPU with avx512_bf16 and many times slower on one
    without: the trainer built for such a CPU says so (the flag read from /proc/cpuinfo is what is
    replaced here; the trainer is real)."""
    from fer_lightning import train_cli
    from stages.train import parse_config

    assert train_cli.cpu_has_bf16() in (True, False, None)
    cfg = {"model": {"net": {"class_path": "fer_lightning.models.CNN2"}},
           "data": {"class_path": "fer_lightning.data.SyntheticFacesDataModule",
                    "init_args": {"num_train": 8, "num_val": 8, "num_test": 8}},
           "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "max_epochs": 1,
                       "default_root_dir": str(tmp_path), "logger": False}}
    for has, warned in ((False, True), (True, False)):
        monkeypatch.setattr(train_cli, "cpu_has_bf16", lambda: has)
        parse_config("cnn", cfg, build=True)
        err = capsys.readouterr().err
        assert ("warning: trainer.precision bf16-mixed on a CPU without bfloat16 instructions" in err) == warned
