"""Failures a user causes get one clear line and leave nothing that looks finished."""

import errno
import json
import os

import pytest

from fer_lightning.errors import UserError
from fer_lightning.pipeline.runner import run_pipeline
from fer_lightning.pipeline.spec import load_pipeline


def _run(path, out, sets=(), **kw):
    return run_pipeline(load_pipeline(path, sets=list(sets)), out, log=lambda *_: None, **kw)


def test_invalid_value_in_a_stage_config(tiny_pipeline, tmp_path):
    with pytest.raises(UserError) as e:
        _run(tiny_pipeline, tmp_path, ["stages.cnn2.params.model.net.init_args.conv_dropout=lots"], only=["cnn2"])
    msg = str(e.value)
    assert msg.startswith("stages.cnn2: invalid config:") and "conv_dropout" in msg and "\n" not in msg
    assert not (tmp_path / "cnn2" / "manifest.json").exists()
    # an unknown data option: the key and the class, not jsonargparse's account of the Optional union
    with pytest.raises(UserError) as e:
        _run(tiny_pipeline, tmp_path, ["data.init_args.fold=1"], only=["cnn2"])
    assert str(e.value) == ("stages.cnn2: invalid config: Parser key \"data\": Problem with given class_path "
                            "'fer_lightning.data.SyntheticFacesDataModule': Option 'fold' is not accepted")


def test_an_invalid_downstream_config_fails_before_any_stage_trains(tiny_pipeline, tmp_path):
    # the fusion head runs after the three CNNs; its typo is found before they train
    sets = ["stages.fusion.params.model.net.init_args.hiden=3"]
    with pytest.raises(UserError, match=r"^stages.fusion: invalid config: .*'hiden' is not accepted"):
        _run(tiny_pipeline, tmp_path, sets)
    assert not (tmp_path / "cnn1").exists()
    statuses = run_pipeline(load_pipeline(tiny_pipeline), tmp_path, dry_run=True, log=lambda *_: None)
    assert statuses["fusion"] == "run"          # the config as shipped parses
    with pytest.raises(UserError, match=r"^stages.fusion: invalid config"):   # `plan` checks too
        run_pipeline(load_pipeline(tiny_pipeline, sets=sets), tmp_path, dry_run=True, log=lambda *_: None)


def test_a_training_that_cannot_train_is_one_line(tiny_pipeline, tmp_path):
    # zero epochs: before any stage; no batch per epoch: when the stage finds no checkpoint
    with pytest.raises(UserError, match=r"^stages.cnn\d.trainer.max_epochs: 0 trains nothing"):
        _run(tiny_pipeline, tmp_path / "a", ["trainer.max_epochs=0"])
    assert not (tmp_path / "a" / "cnn1").exists()
    with pytest.raises(UserError, match=r"^stages.cnn2: no epoch of training ran to its end, so there is no model"):
        _run(tiny_pipeline, tmp_path / "b", ["trainer.limit_train_batches=0"], only=["cnn2"])
    assert not (tmp_path / "b" / "cnn2" / "manifest.json").exists()
    # an optimiser value torch refuses: before any stage, not when cnn2's fit starts
    with pytest.raises(UserError, match=r"^stages.cnn2.model.optimizer: Invalid learning rate: -1"):
        _run(tiny_pipeline, tmp_path / "d", ["stages.cnn2.params.model.optimizer.init_args.lr=-1"])
    assert not (tmp_path / "d" / "cnn1").exists()
    # and a schedule value: the plateau schedule's factor must be below 1
    plateau = ("stages.cnn3.params.model.scheduler={class_path: torch.optim.lr_scheduler.ReduceLROnPlateau, "
               "init_args: {mode: max, factor: 1.5}}")
    with pytest.raises(UserError, match=r"^stages.cnn3.model.scheduler: Factor should be < 1.0"):
        _run(tiny_pipeline, tmp_path / "e", [plateau])
    assert not (tmp_path / "e" / "cnn1").exists()
    for bad in ("0", "-3"):  # a batch size below 1: before any stage
        with pytest.raises(UserError, match=rf"^data.batch_size: {bad}: expected a whole number of 1 or more"):
            _run(tiny_pipeline, tmp_path / "c", [f"data.init_args.batch_size={bad}"])
    assert not (tmp_path / "c" / "cnn1").exists()


def test_a_gpu_trainer_on_a_machine_without_enough_gpus_fails_before_any_stage_trains(tiny_pipeline, tmp_path):
    import torch

    n = torch.cuda.device_count()
    sets = ["trainer.accelerator=gpu", f"trainer.devices={n + 1}"]
    with pytest.raises(UserError, match=rf"^stages.cnn\d.trainer: accelerator 'gpu' with devices {n + 1}, "
                                        rf"but torch finds {n} CUDA GPU"):
        _run(tiny_pipeline, tmp_path, sets)
    assert not any((tmp_path / s).exists() for s in ("cnn1", "cnn2", "cnn3"))


@pytest.mark.parametrize("setting, message", [
    ("stages.score_fusion.params.methods=[mean, median]", r"^stages.score_fusion.params.methods: expected"),
    ("stages.probe.params.classifiers={svm: {class_path: sklearn.svm.LinearSVX}}",
     r"^stages.probe.params.classifiers.svm: class_path 'sklearn.svm.LinearSVX' cannot be imported"),
    ("stages.probe.params.classifiers={knn: {class_path: sklearn.neighbors.KNeighborsClassifier, "
     "init_args: {k: 5}}}", r"^stages.probe.params.classifiers.knn: .*'k'"),
    ("stages.report.params.tables=[{title: T, columns: [acc, f2], rows: []}]", r"unknown: f2"),
    ("stages.report.params.tables=[{title: T, columns: [acc], rows: [{label: x, source: cnn9/acc}]}]",
     r"^stages.report.params.tables\[0\]: row 'x': source 'cnn9/acc' names no input"),
    ("stages.report.params.tables=[{title: T, columns: [acc], rows: [{label: x, source: cnn1, papr: {acc: 1}}]}]",
     r"^stages.report.params.tables\[0\].rows: each row has a label, a source and optionally paper"),
    ("stages.cross={kind: evaluate, inputs: {models: [cnn1.checkpoint]}, params: {data: faces, tta: flop}}",
     r"^stages.cross.params.tta: 'flop' is not one of none, flip"),
])
def test_a_typo_in_a_light_stage_fails_before_any_stage_trains(tiny_pipeline, tmp_path, setting, message):
    with pytest.raises(UserError, match=message):
        _run(tiny_pipeline, tmp_path, [setting])
    assert not (tmp_path / "cnn1").exists()


def test_a_train_stage_takes_only_teacher_and_init_inputs_and_only_readable_ones(tiny_pipeline, tmp_path):
    teacher = tmp_path / "probs.npz"
    teacher.write_bytes(b"not an npz file")
    with pytest.raises(UserError, match=r"stages.cnn2.inputs: a train stage takes \{teacher: <stage>.probs\} and "
                                        r"\{init: <stage>.checkpoint\}, nothing else"):
        _run(tiny_pipeline, tmp_path / "a", [f"stages.cnn2.inputs={{features: {teacher}}}"], only=["cnn2"])
    with pytest.raises(UserError, match=r"^data.teacher_probs: .*probs.npz: not a readable .npz file"):
        _run(tiny_pipeline, tmp_path / "b", [f"stages.cnn2.inputs={{teacher: {teacher}}}"], only=["cnn2"])
    assert not (tmp_path / "b" / "cnn2" / "manifest.json").exists()
    with pytest.raises(UserError, match=r"probs.npz: not a readable checkpoint"):
        _run(tiny_pipeline, tmp_path / "c", [f"stages.cnn2.inputs={{init: {teacher}}}"], only=["cnn2"])
    assert not (tmp_path / "c" / "cnn2" / "manifest.json").exists()


def test_a_damaged_npz_input_is_a_one_line_error(tmp_path):
    """A probabilities or features file cut short (a copy that did not finish) raised zipfile's
    BadZipFile from inside score fusion, probes and distillation."""
    import numpy as np

    from fer_lightning.artifacts import atomic_save_npz, load_npz, npz_array_shape

    whole = tmp_path / "probs.npz"
    atomic_save_npz(whole, test_probs=np.full((50, 7), 1 / 7, np.float32), test_labels=np.arange(50) % 7)
    assert load_npz(whole)["test_probs"].shape == (50, 7) and npz_array_shape(whole, "test_probs") == (50, 7)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:1000])
    np.save(tmp_path / "one.npy", np.zeros(3))
    for bad in (cut, tmp_path / "one.npy"):
        with pytest.raises(UserError, match=rf"^{bad}: not a readable .npz file \(cut short, or another format\?\)"):
            load_npz(bad)
    with pytest.raises(UserError, match=rf"^{cut}: not a readable .npz file"):
        npz_array_shape(cut, "test_probs")
    with pytest.raises(UserError, match=r"missing.npz: file not found$"):
        load_npz(tmp_path / "missing.npz")


def test_a_damaged_metrics_input_of_a_report_is_a_one_line_error(tmp_path):
    from fer_lightning.artifacts import load_json_object

    (tmp_path / "cut.json").write_text('{"private_test": {"acc": 0.6')
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"cut.json: not a readable JSON file \(cut short\?\)"):
        load_json_object(tmp_path / "cut.json")
    with pytest.raises(UserError, match=r"list.json: expected a JSON object .* found list"):
        load_json_object(tmp_path / "list.json")
    # through the pipeline: the kept-networks report with one metrics file damaged
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "fer_lightning", "pipeline", "run", "configs/pipelines/fer2013_kept.yaml",
                        "--out", str(tmp_path / "out"), "--set", f"stages.report.inputs.wide_vgg_adam={tmp_path / 'cut.json'}"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "FER_WANDB": "off"})
    assert r.returncode == 2 and "cut.json: not a readable JSON file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "report" / "manifest.json").exists()


def test_a_bad_data_file_fails_once_before_any_stage_starts(tiny_pipeline, tmp_path):
    """The runner reads each data file or folder once before the stages start (they then load
    FER2013's parsed cache): a bad row, a misaligned FER+ file, a missing split or a bad class
    folder is one error, and no stage has begun."""
    from conftest import write_fer_csv

    rows = [(i % 7, [i] * 2304, ("Training", "PublicTest", "PrivateTest")[i % 3]) for i in range(21)]
    good = write_fer_csv(tmp_path / "good.csv", rows)
    bad = write_fer_csv(tmp_path / "bad.csv", rows + [(0, "1 2 3", "Training")])
    cache = f"data.init_args.cache_dir={tmp_path / 'cache'}"
    with pytest.raises(UserError, match=rf"^{bad}: line 23: pixels has 3 values, expected 2304$"):
        run_pipeline(load_pipeline(tiny_pipeline, data=str(bad), sets=[cache]), tmp_path / "a", jobs=3,
                     log=lambda *_: None)
    ferplus = tmp_path / "fer2013new.csv"
    ferplus.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
                       "unknown,NF\n" + "Training,x.png,10,0,0,0,0,0,0,0,0,0\n" * 20)
    with pytest.raises(UserError, match=r"fer2013new.csv: 20 rows, but the FER2013 CSV has 21"):
        run_pipeline(load_pipeline(tiny_pipeline, data=str(good), sets=[cache, f"data.init_args.ferplus_csv={ferplus}"]),
                     tmp_path / "b", jobs=3, log=lambda *_: None)
    no_public = write_fer_csv(tmp_path / "no_public.csv", [r for r in rows if r[2] != "PublicTest"])
    with pytest.raises(UserError, match=rf"^{no_public}: no rows with Usage 'PublicTest'"):
        run_pipeline(load_pipeline(tiny_pipeline, data=str(no_public), sets=[cache]), tmp_path / "c", jobs=3,
                     log=lambda *_: None)
    faces = tmp_path / "faces"  # an image folder: read by the runner too, before any stage
    (faces / "smirk").mkdir(parents=True)
    with pytest.raises(UserError, match=rf"^{faces / 'smirk'}: unknown class name 'smirk'"):
        run_pipeline(load_pipeline(tiny_pipeline, data=str(faces)), tmp_path / "d", jobs=3, log=lambda *_: None)
    assert not any((tmp_path / d / "cnn1").exists() for d in "abcd")
    assert len(list((tmp_path / "cache").glob("fer2013-*.pt"))) == 2  # good and no_public, parsed by the runner


def test_nan_loss_stops_the_stage_and_marks_nothing_done(tiny_pipeline, tmp_path):
    with pytest.raises(UserError, match="stage 'cnn2' stopped: training loss is nan"):
        _run(tiny_pipeline, tmp_path, ["stages.cnn2.params.model.optimizer.init_args.lr=1.0e+30"], only=["cnn2"])
    assert not (tmp_path / "cnn2" / "manifest.json").exists()


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    import torch

    from fer_lightning.checkpoints import load_net
    from fer_lightning.models import CNN1, CNN2
    from fer_lightning.module import ClassifierModule

    with pytest.raises(UserError, match="checkpoint not found"):
        load_net(tmp_path / "missing.ckpt")
    module = ClassifierModule(CNN2())
    good = tmp_path / "cnn2.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, good)
    assert isinstance(load_net(good), CNN2)
    stage = tmp_path / "cnn2"   # a finished stage's folder stands for its model.ckpt
    stage.mkdir()
    with pytest.raises(UserError, match=r"cnn2: checkpoint not found \(a folder: name its model.ckpt\)"):
        load_net(stage)
    (stage / "model.ckpt").write_bytes(good.read_bytes())
    assert isinstance(load_net(stage), CNN2)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated.ckpt: not a readable checkpoint"):
        load_net(truncated)
    other = tmp_path / "other.ckpt"  # CNN1 weights claiming to be a CNN2
    torch.save({"state_dict": ClassifierModule(CNN1()).state_dict(), "hyper_parameters": dict(module.hparams)}, other)
    with pytest.raises(UserError, match="other.ckpt: weights do not match fer_lightning.models.cnn.CNN2"):
        load_net(other)
    from fer_lightning.models import FeatureHead

    head = ClassifierModule(FeatureHead(in_features=12))  # a head stage without backbones
    torch.save({"state_dict": head.state_dict(), "hyper_parameters": dict(head.hparams)}, tmp_path / "head.ckpt")
    with pytest.raises(UserError, match="head.ckpt: a head trained on saved feature vectors, not a model of face"):
        load_net(tmp_path / "head.ckpt")


def test_output_directory_that_cannot_be_created(tiny_pipeline, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "runs", blocker):   # under a file, or a file itself
        with pytest.raises(UserError, match=rf"^{out}: cannot write outputs there \({blocker} is a file\); "
                                            rf"pass another --out$"):
            _run(tiny_pipeline, out)


def test_disk_full_during_an_artifact_write(tiny_pipeline, tmp_path, monkeypatch):
    """A write that fails half-way leaves neither the artifact nor a temporary file behind."""
    import fer_lightning.artifacts as artifacts

    _run(tiny_pipeline, tmp_path, only=["cnn2"])
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(UserError, match="stage 'cnn2': cannot write .*No space left on device"):
        _run(tiny_pipeline, tmp_path, force=True, only=["cnn2"])
    stage = tmp_path / "cnn2"
    assert not (stage / "manifest.json").exists()
    assert not [p for p in stage.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert _run(tiny_pipeline, tmp_path, only=["cnn2"])["cnn2"] == "run"


def test_same_config_and_seed_give_identical_metrics_and_artifacts(tiny_pipeline, tmp_path):
    for name in ("a", "b"):
        _run(tiny_pipeline, tmp_path / name, only=["cnn3"])
    ma, mb = (json.loads((tmp_path / n / "cnn3" / "manifest.json").read_text()) for n in ("a", "b"))
    assert {k: v["sha256"] for k, v in ma["outputs"].items()} == {k: v["sha256"] for k, v in mb["outputs"].items()}
    assert ma["metrics"] == mb["metrics"]


def test_an_artifact_gets_the_mode_a_plain_write_gives(tmp_path):
    """Atomic writes go through a private temporary file; the artifact must not stay private
    (owner-only) where the umask lets others read what a plain write creates."""
    import stat

    from fer_lightning.artifacts import atomic_write_text

    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
