"""The whole paper-000 DAG on tiny synthetic data with the real Trainer, and the caching rules."""

import json
import re

import numpy as np
import pytest

from conftest import ROOT
from fer_lightning.errors import UserError
from fer_lightning.pipeline.runner import run_pipeline
from fer_lightning.pipeline.spec import load_pipeline

ALL = ["cnn1", "cnn2", "cnn3", "fusion", "score_fusion", "probe", "report"]


def _run(path, out, sets=(), **kw):
    return run_pipeline(load_pipeline(path, sets=list(sets)), out, log=lambda *_: None, **kw)


def _ran(statuses):
    return sorted(n for n, s in statuses.items() if s == "run")


def test_dag_runs_then_caches_by_the_rules(tiny_pipeline, tmp_path):
    out = tmp_path / "runs"
    assert _ran(_run(tiny_pipeline, out)) == sorted(ALL)
    for stage in ALL:
        manifest = json.loads((out / stage / "manifest.json").read_text())
        assert manifest["key"] and all(o["sha256"] for o in manifest["outputs"].values())
    report = (out / "report" / "report.md").read_text()
    assert "Mean-Score Fusion" in report and "69.03" in report
    assert (out / "report" / "confusion_mean_score_fusion.png").stat().st_size > 1000
    tables = json.loads((out / "report" / "report.json").read_text())["tables"]
    assert [len(t["rows"]) for t in tables] == [6, 6, 10]
    _fusion_head_works_on_images(out)
    _kept_probabilities_fuse_as_the_originals(out, tmp_path)

    # 1. unchanged: everything skipped
    assert _ran(_run(tiny_pipeline, out)) == []
    # 2. probe settings changed: probe and report only
    k = ["stages.probe.params.classifiers.knn.init_args.n_neighbors=3"]
    assert _ran(_run(tiny_pipeline, out, k)) == ["probe", "report"]
    # 3. CNN2's config changed: CNN2 and everything downstream; CNN1/CNN3 skipped
    c = k + ["stages.cnn2.params.model.net.init_args.conv_dropout=0.3"]
    assert _ran(_run(tiny_pipeline, out, c)) == ["cnn2", "fusion", "probe", "report", "score_fusion"]
    assert [p.name for p in (out / "cnn2" / "csv_logs").iterdir()] == ["version_0"]  # the old run's: gone
    assert _ran(_run(tiny_pipeline, out, c)) == []

    # an artifact changed on disk after its stage finished: that stage (and only what its new
    # output feeds) re-runs
    probs = out / "score_fusion" / "probs.npz"
    probs.write_bytes(probs.read_bytes()[:-10])
    assert _ran(_run(tiny_pipeline, out, c)) == ["score_fusion"]

    # dry run (plan) changes nothing
    d = c + ["stages.cnn3.params.model.net.init_args.conv_dropout=0.3"]
    assert _ran(_run(tiny_pipeline, out, d, dry_run=True)) == ["cnn3", "probe", "report", "score_fusion"]
    assert _ran(_run(tiny_pipeline, out, d, dry_run=True, only=["cnn3"])) == ["cnn3"]  # what --only runs
    assert _ran(_run(tiny_pipeline, out, c)) == []

    # --from re-runs a stage and its descendants; --only one stage
    assert _ran(_run(tiny_pipeline, out, c, from_stage="fusion")) == ["fusion", "probe", "report", "score_fusion"]
    assert _ran(_run(tiny_pipeline, out, c, only=["probe"], force=True)) == ["probe"]


def _kept_probabilities_fuse_as_the_originals(out, tmp_path):
    """bench/keep_probs.py keeps the trained networks' probabilities (float16, for the repository):
    fused from the kept files they score as the run's own score fusion did."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from keep_probs import keep

    kept = tmp_path / "kept"
    assert sorted(p.name for p in keep([out], kept)) == ["cnn1.npz", "cnn2.npz", "cnn3.npz", "fusion.npz"]
    assert json.loads((kept / "cnn3.json").read_text()) == json.loads((out / "cnn3" / "metrics.json").read_text())
    (tmp_path / "kept.yaml").write_text(
        "name: kept\nstages:\n  fused:\n    kind: score_fusion\n"
        "    inputs: {members: [kept/fusion.npz, kept/cnn3.npz]}\n    params: {methods: [max, mean]}\n")
    _run(tmp_path / "kept.yaml", tmp_path / "kept_runs")
    ours = json.loads((tmp_path / "kept_runs" / "fused" / "metrics.json").read_text())
    theirs = json.loads((out / "score_fusion" / "metrics.json").read_text())
    assert {m: ours[m]["test"]["acc"] for m in ours} == {m: theirs[m]["test"]["acc"] for m in ours}
    # bench/fusion_subsets.py ranks every subset's mean fusion: the pair's row is the stage's mean
    from fusion_subsets import rank_subsets

    rows = rank_subsets([str(kept / "fusion.npz"), str(kept / "cnn3.npz")], choose="val", report="test")
    assert len(rows) == 3 and [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    pair = next(r for r in rows if len(r[2]) == 2)
    assert pair[1] == pytest.approx(100 * ours["mean"]["test"]["acc"], abs=1e-4)
    assert pair[0] == pytest.approx(100 * ours["mean"]["val"]["acc"], abs=1e-4)
    # --join: kept.yaml's two members, then with cnn1 added: the rows rank_subsets gives those sets
    from fusion_subsets import join_rows

    trio = [str(kept / n) for n in ("fusion.npz", "cnn3.npz", "cnn1.npz")]
    trio_row = next(r for r in rank_subsets(trio, choose="val", report="test") if len(r[2]) == 3)
    (*base, members), (*grown, with_cnn1) = join_rows(tmp_path / "kept.yaml", [trio[2]], "val", "test")
    assert list(members) == trio[:2] and list(with_cnn1) == trio
    assert base == pytest.approx(list(pair[:2])) and grown == pytest.approx(list(trio_row[:2]))
    # --pick: one file per network, the one best on the choosing split (a rescored copy that is
    # right on every val face wins; an equal copy does not); --cv: one member's weight is 1, so its
    # held-out accuracy is its own accuracy on the split
    import numpy as np
    from fusion_subsets import cv_accuracy, pick_per_network

    from fer_lightning.artifacts import load_npz

    cnn3 = load_npz(kept / "cnn3.npz")
    np.savez(kept / "cnn3_flip.npz", **cnn3)
    assert [f for _, f in pick_per_network([trio[1], str(kept / "cnn3_flip.npz"), trio[2]], "val")] == trio[1:]
    perfect = np.eye(cnn3["val_probs"].shape[1], dtype=cnn3["val_probs"].dtype)[cnn3["val_labels"]]
    np.savez(kept / "cnn3_flip.npz", **{**cnn3, "val_probs": perfect})
    assert pick_per_network([trio[1], str(kept / "cnn3_flip.npz")], "val") == [(100.0, str(kept / "cnn3_flip.npz"))]
    (kept / "cnn3_flip.npz").unlink()
    own = 100 * (cnn3["val_probs"].argmax(1) == cnn3["val_labels"]).mean()
    halves_differ_by = 100 / len(cnn3["val_labels"])  # two folds of sizes n and n+1 weigh a face unequally
    assert cv_accuracy([trio[1]], folds=2, shuffles=3, split="val") == pytest.approx(own, abs=halves_differ_by)
    # --rules: its mean is the stage's mean; one member's scores keep their argmax under every rule
    # but the class offsets, fitted or held out
    from fusion_subsets import rule_accuracies

    assert rule_accuracies(trio[:2], shuffles=2, choose="val", report="test")["mean"][0] == pytest.approx(pair[1], abs=1e-4)
    alone = rule_accuracies([trio[1]], shuffles=3, choose="val", report="test")
    own_test = 100 * (cnn3["test_probs"].argmax(1) == cnn3["test_labels"]).mean()
    assert len(alone) == 5 and "weights + class offsets" in alone
    for rule in ("mean", "geometric mean", "weights (the stage's weighted)", "weights on log scores"):
        assert alone[rule][0] == pytest.approx(own_test) and alone[rule][1] == pytest.approx(own, abs=halves_differ_by)
    with pytest.raises(SystemExit, match="exists"):  # never overwrites what was kept
        keep([out], kept)
    # --no-train slims a kept file in place: the training split's scores go, the rest stays as it was
    before = dict(np.load(kept / "cnn3.npz"))
    keep([kept / "cnn3.npz"], kept, no_train=True)
    after = np.load(kept / "cnn3.npz")
    assert "train_probs" in before and set(after) == {k for k in before if not k.startswith("train_")}
    assert all(np.array_equal(after[k], before[k]) for k in after)


def test_kept_fer2013_scores_leave_out_the_test_copy_and_load_it_back(tmp_path):
    """FER2013's `test` split repeats PublicTest then PrivateTest, and the recipes' `val` split
    repeats PublicTest: keep_probs leaves both out of a kept file and load_npz rebuilds them; a
    `test` or `val` that is not such a copy is kept as it is."""
    import sys

    import numpy as np

    from fer_lightning.artifacts import load_npz
    from fer_lightning.errors import UserError

    sys.path.insert(0, str(ROOT / "bench"))
    from keep_probs import slim

    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": (rng.dirichlet(np.ones(7), n).astype(np.float32) if k == "probs" else rng.integers(0, 7, n))
              for s, n in (("public_test", 5), ("private_test", 4)) for k in ("probs", "labels")}
    arrays["test_probs"] = np.concatenate([arrays["public_test_probs"], arrays["private_test_probs"]])
    arrays["test_labels"] = np.concatenate([arrays["public_test_labels"], arrays["private_test_labels"]])
    arrays["val_probs"], arrays["val_labels"] = arrays["public_test_probs"].copy(), arrays["public_test_labels"].copy()
    (tmp_path / "kept.npz").write_bytes(slim(arrays, no_train=True))
    assert not {"test_probs", "val_probs", "val_labels"} & set(np.load(tmp_path / "kept.npz").files)
    back = load_npz(tmp_path / "kept.npz")
    assert set(back) == set(arrays)
    assert all(np.array_equal(back[k], arrays[k].astype(np.float16).astype(np.float32) if k.endswith("_probs")
                              else arrays[k]) for k in arrays)
    arrays["test_labels"] = arrays["test_labels"][::-1].copy()  # another test split: not dropped
    arrays["val_probs"] = arrays["val_probs"][::-1].copy()        # another validation split: likewise
    (tmp_path / "other.npz").write_bytes(slim(arrays, no_train=True))
    other = load_npz(tmp_path / "other.npz")
    assert np.array_equal(other["test_labels"], arrays["test_labels"])
    assert np.array_equal(other["val_probs"], arrays["val_probs"].astype(np.float16).astype(np.float32))
    np.savez(tmp_path / "bad.npz", val_copy_of=np.array("public_test"), train_labels=np.zeros(3))
    with pytest.raises(UserError, match=r"bad.npz: its `val` split is to repeat 'public_test', which the file lacks"):
        load_npz(tmp_path / "bad.npz")


def _fusion_head_works_on_images(out):
    """The fusion head trained on saved features exports the image-level network: from the test
    faces it gives the scores the head stage wrote (so `evaluate`/`predict` take it)."""
    import numpy as np
    import yaml

    from fer_lightning.checkpoints import load_net
    from fer_lightning.config import instantiate
    from fer_lightning.evaluate import predict_probs
    from fer_lightning.models import FusionNet

    net = load_net(out / "fusion" / "model.ckpt")
    assert isinstance(net, FusionNet) and len(net.backbones) == 2
    data = yaml.safe_load((out / "cnn1" / "config.yaml").read_text())["data"]
    images, _ = instantiate(data, "data").split("test")
    expected = np.load(out / "fusion" / "probs.npz")["test_probs"]
    assert np.allclose(predict_probs([net], images), expected, atol=1e-5)


def test_stage_interrupted_leaves_no_finished_manifest(tiny_pipeline, tmp_path, monkeypatch):
    import stages.probe

    out = tmp_path / "runs"

    def boom(ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.probe, "run", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_pipeline, out)
    assert (out / "score_fusion" / "manifest.json").is_file()
    assert not (out / "probe" / "manifest.json").exists()
    monkeypatch.undo()
    assert _ran(_run(tiny_pipeline, out)) == ["probe", "report"]


def test_a_stage_config_file_given_by_set_is_relative_to_the_working_directory(tiny_pipeline, monkeypatch):
    monkeypatch.chdir(ROOT)
    stage = load_pipeline(tiny_pipeline, sets=["stages.cnn1.config=configs/models/cnn2.yaml"]).stages["cnn1"]
    assert stage.config["model"]["net"]["class_path"] == "fer_lightning.models.CNN2"
    with pytest.raises(UserError, match=r"stages.cnn1.config: file 'configs/models/nope.yaml' does not exist$"):
        load_pipeline(tiny_pipeline, sets=["stages.cnn1.config=configs/models/nope.yaml"])


@pytest.mark.parametrize("edit, message", [
    ("stages.cnn1.kind=transform", "unknown stage kind 'transform'"),
    ("stages={a/b: {kind: report}}", "stages.a/b: a stage name is letters, digits, '_' and '-' only"),
    ("stages={1: {kind: report}}", "stages.1: a stage name is letters, digits"),
    ("name=../elsewhere", "name: '../elsewhere': a folder name for runs/<name> (no '/', not starting with '.')"),
    ("stages.extra={config: ../models/cnn1.yaml}", "stages.extra.kind: missing (known: evaluate,"),
    ("stages.cnn1.colour=blue", "stages.cnn1: unknown key(s) colour"),
    ("stages.fusion.inputs.backbones=[cnn9.checkpoint]", "names a missing stage 'cnn9'"),
    ("stages.fusion.inputs.backbones=[cnn1.weights]", "stage 'cnn1' (train) has no output 'weights'"),
    ("stages.cnn1.inputs={x: report.report}", "the stages form a cycle"),
    ("epochs=3", "unknown key(s) epochs"),
    ("stages.probe.params.knn.init_args.n_neighbors=7",   # the key is classifiers.knn...
     "stages.probe.params: unknown key(s) knn (a probe stage takes classifiers, train_split, eval_splits)"),
    ("stages.score_fusion.params.seed=3", "stages.score_fusion.params: unknown key(s) seed"),
])
def test_bad_pipeline_files_are_one_line_errors(tiny_pipeline, edit, message):
    with pytest.raises(UserError) as e:
        load_pipeline(tiny_pipeline, sets=[edit])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_pipeline_yaml_and_set_values_are_read_strictly_and_errors_name_the_line(tiny_pipeline, tmp_path):
    """PyYAML keeps the last of two equal keys silently: a stage pasted twice under one name
    would vanish. And a syntax error names its line, not just 'while parsing a block mapping'."""
    twice = tmp_path / "twice.yaml"
    twice.write_text(f"base: {tiny_pipeline}\nname: twice\nstages:\n  cnn1: {{params: {{seed: 1}}}}\n"
                     "  cnn1: {params: {seed: 2}}\n")
    with pytest.raises(UserError) as e:
        load_pipeline(twice)
    assert str(e.value) == (f"{twice}: invalid YAML: line 5, column 3: key 'cnn1' given twice in one mapping "
                            "(YAML would keep only the last)")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nstages:\n  a:\n    kind: train\n   b: 1\n")
    with pytest.raises(UserError, match=rf"^{broken}: invalid YAML: line 5, column 4: expected <block end>"):
        load_pipeline(broken)
    with pytest.raises(UserError, match=r"^--set trainer=\{a: invalid YAML: line 1"):
        load_pipeline(tiny_pipeline, sets=["trainer={a"])
    # `1e-4` is a float, as in YAML 1.2 and jsonargparse (PyYAML alone reads a string)
    svm = {"class_path": "sklearn.svm.LinearSVC", "init_args": {"C": 0.01}}
    sets = ["stages.probe.params.classifiers={svm: {class_path: sklearn.svm.LinearSVC, init_args: {C: 1e-2}}}"]
    assert load_pipeline(tiny_pipeline, sets=sets).stages["probe"].config["classifiers"] == {"svm": svm}
    for item in ("seed", "=3", "stages..seed=3", "seed.=3"):
        with pytest.raises(UserError, match=rf"^--set {re.escape(item)}: expected KEY=VALUE, KEY dotted"):
            load_pipeline(tiny_pipeline, sets=[item])
    # a YAML merge key (`<<`) and a key it merges in, given again to override it, are no repeat
    merged = tmp_path / "merged.yaml"
    merged.write_text(f"base: {tiny_pipeline}\nname: m\nstages:\n"
                      "  cnn1: {params: {trainer: &quick {max_epochs: 1, limit_train_batches: 2}}}\n"
                      "  cnn2: {params: {trainer: {<<: *quick, max_epochs: 2}}}\n")
    trainer = load_pipeline(merged).stages["cnn2"].config["trainer"]
    assert trainer["max_epochs"] == 2 and trainer["limit_train_batches"] == 2


def test_only_a_stage_whose_inputs_are_missing_is_an_error(tiny_pipeline, tmp_path):
    with pytest.raises(UserError, match="needs cnn1, cnn2, not finished yet"):
        _run(tiny_pipeline, tmp_path / "runs", only=["fusion"])


def test_second_run_on_the_same_output_directory_is_refused(tiny_pipeline, tmp_path):
    from fer_lightning.pipeline.runner import _lock

    with _lock(tmp_path / "runs"):
        with pytest.raises(UserError, match="another pipeline run is using this output directory"):
            _run(tiny_pipeline, tmp_path / "runs")


def test_interrupted_training_resumes_from_last_checkpoint_with_identical_results(tiny_pipeline, tmp_path, monkeypatch):
    from fer_lightning.module import ClassifierModule

    sets = ["trainer.max_epochs=2"]
    _run(tiny_pipeline, tmp_path / "straight", sets, only=["cnn2"])
    straight = json.loads((tmp_path / "straight" / "cnn2" / "metrics.json").read_text())

    original = ClassifierModule.on_train_epoch_start

    def crash_after_first_epoch(self):  # epoch 0's checkpoints are written by then
        if self.current_epoch == 1:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(ClassifierModule, "on_train_epoch_start", crash_after_first_epoch)
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tiny_pipeline, out, sets, only=["cnn2"])
    assert (out / "cnn2" / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "cnn2" / "manifest.json").exists()
    monkeypatch.undo()
    lines = []
    run_pipeline(load_pipeline(tiny_pipeline, sets=sets), out, only=["cnn2"], log=lines.append)
    assert any("no finished run" in line for line in lines)
    resumed = json.loads((out / "cnn2" / "metrics.json").read_text())
    assert resumed["best_epoch"] == straight["best_epoch"]
    assert resumed["epochs_trained"] == straight["epochs_trained"] == 2
    for split in ("train", "val", "test"):
        assert resumed[split]["acc"] == straight[split]["acc"]
        assert resumed[split]["confusion"] == straight[split]["confusion"]

    # a new trainer.max_time re-runs the stage but continues the same training (here: already at its
    # last epoch, so no epoch runs again); any other change starts it over
    def no_more_training(self):
        raise RuntimeError("trained again")

    monkeypatch.setattr(ClassifierModule, "on_train_epoch_start", no_more_training)
    lines = []
    run_pipeline(load_pipeline(tiny_pipeline, sets=sets + ["trainer.max_time=00:01:00:00"]), out,
                 only=["cnn2"], log=lines.append)
    assert any("config or inputs changed" in line for line in lines)
    assert json.loads((out / "cnn2" / "metrics.json").read_text())["test"] == straight["test"]
    with pytest.raises(RuntimeError, match="trained again"):
        _run(tiny_pipeline, out, sets + ["stages.cnn2.params.model.optimizer.init_args.lr=0.002"], only=["cnn2"])


def test_auto_plan_fills_every_core_up_to_one_extra_slot_and_shares_a_gpu(monkeypatch):
    import torch

    import fer_lightning
    from fer_lightning.pipeline.runner import plan_slots

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(fer_lightning, "usable_cores", lambda: 2)
    plans = {width: plan_slots("auto", width) for width in (1, 2, 3, 8)}
    assert {w: (len(slots), threads) for w, (slots, threads) in plans.items()} == \
        {1: (1, 2), 2: (2, 1), 3: (3, 1), 8: (3, 1)}
    assert len(plan_slots(5, 3)[0]) == 5 and plan_slots(1, 3) == ([{}], 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU: up to 3 side by side
    assert [len(plan_slots("auto", w)[0]) for w in (1, 2, 3, 8)] == [1, 2, 3, 3]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # several: one stage per GPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in plan_slots("auto", 8)[0]] == ["0", "1", "2", "3"]
    with pytest.raises(UserError, match="jobs: '0'"):
        plan_slots(0, 3)
    with pytest.raises(UserError, match=r"jobs: '1.5'"):  # not silently cut to 1
        plan_slots("1.5", 3)
    # side by side, stages' OpenMP threads wait passively unless the user chose otherwise
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert [s.get("OMP_WAIT_POLICY") for s in plan_slots(3, 3)[0]] == ["PASSIVE"] * 3
    assert plan_slots(1, 3)[0] == [{"CUDA_VISIBLE_DEVICES": "0"}]              # one at a time: as it was
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "OMP_WAIT_POLICY" not in plan_slots(3, 3)[0][0]


def test_independent_stages_run_side_by_side_with_the_results_of_a_sequential_run(tiny_pipeline, tmp_path):
    from datetime import datetime

    par, seq = tmp_path / "par", tmp_path / "seq"
    said = []
    assert _ran(run_pipeline(load_pipeline(tiny_pipeline), par, log=said.append, jobs=2)) == sorted(ALL)
    # each epoch line a stage printed in its own process is relayed under its name (the last always)
    epochs = load_pipeline(tiny_pipeline).stages["cnn1"].config["trainer"]["max_epochs"]
    assert any(re.fullmatch(rf" +cnn1 +epoch {epochs}/{epochs}: train loss [0-9.]+, val acc [0-9.]+ % \(\d+ s\)", line)
               for line in said), said
    times = {s: json.loads((par / s / "manifest.json").read_text())["timings"] for s in ("cnn1", "cnn2")}
    start = {s: datetime.fromisoformat(t["started"]) for s, t in times.items()}
    end = {s: datetime.fromisoformat(t["finished"]) for s, t in times.items()}
    assert start["cnn2"] < end["cnn1"] and start["cnn1"] < end["cnn2"]   # they overlapped
    assert "GPU available" in (par / "cnn1" / "stage.log").read_text()   # the stage's own output
    # one thread per stage both ways: scheduling does not change a single number
    assert _ran(_run(tiny_pipeline, seq, jobs=1, threads=1)) == sorted(ALL)
    for s in ALL:
        a, b = (json.loads((d / s / "manifest.json").read_text()) for d in (par, seq))
        assert a["metrics"] == b["metrics"], s
        assert a["key"] == b["key"], s
    # a stage failing in its own process: one line naming it and its log; the other stage finishes
    bad = ["stages.cnn2.params.model.optimizer.init_args.lr=1.0e+30", "trainer.max_epochs=2"]
    with pytest.raises(UserError, match=r"stage 'cnn2' failed in its own process .*full log: .*cnn2/stage.log"):
        _run(tiny_pipeline, tmp_path / "fail", bad, jobs=2)
    assert (tmp_path / "fail" / "cnn1" / "manifest.json").exists()
    assert not (tmp_path / "fail" / "cnn2" / "manifest.json").exists()
    assert not (tmp_path / "fail" / "fusion").exists()


def test_the_runner_relays_progress_warnings_and_resumes_from_stage_logs(tmp_path):
    from fer_lightning.pipeline.processes import Running, relay_progress

    log_file, said, relayed = tmp_path / "stage.log", [], {}
    running = {"cnn1": Running(None, 0, None, log_file, 0.0)}
    log_file.write_text("GPU available: False\n[cnn1] resuming from last.ckpt\nepoch 3/40: train loss 1.2, "
                        "val acc 50.00 % (9 s)\nwarning: x\nepoch 4/40: train lo")   # the last line unfinished
    relay_progress(running, relayed, said.append)
    assert [line.split(None, 1)[1] for line in said] == [
        "resuming from last.ckpt", "epoch 3/40: train loss 1.2, val acc 50.00 % (9 s)", "warning: x"]
    with log_file.open("a") as f:
        f.write("ss 1.1, val acc 51.00 % (9 s)\n")
    relay_progress(running, relayed, said.append)
    assert said[-1].split(None, 1)[1] == "epoch 4/40: train loss 1.1, val acc 51.00 % (9 s)" and len(said) == 4


def test_file_inputs_fuse_the_artifacts_of_other_runs(tmp_path, monkeypatch):
    # An ensemble across pipelines: score fusion of probs.npz files other runs wrote. A file's
    # content is part of the key: unchanged → cached, changed → re-run; missing → one-line error.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 50)
    for name, n_train in (("a", 30), ("b", 40)):  # different train splits: left out, not an error
        (tmp_path / "other" / name).mkdir(parents=True)
        probs = {f"{s}_probs": rng.dirichlet(np.ones(7), 50).astype(np.float32) for s in ("public_test", "test")}
        np.savez(tmp_path / "other" / name / "probs.npz", public_test_labels=labels, test_labels=labels,
                 train_labels=np.zeros(n_train, int), train_probs=np.full((n_train, 7), 1 / 7), **probs)
    (tmp_path / "ensemble.yaml").write_text(
        "name: ensemble\n"
        "stages:\n"
        "  fused:\n"
        "    kind: score_fusion\n"
        "    inputs: {members: [other/a/probs.npz, other/b/probs.npz]}\n"
        "    params: {methods: [mean, weighted]}\n")
    out = tmp_path / "runs"
    assert _ran(_run(tmp_path / "ensemble.yaml", out)) == ["fused"]
    metrics = json.loads((out / "fused" / "metrics.json").read_text())
    a, b = (np.load(tmp_path / "other" / n / "probs.npz")["test_probs"] for n in "ab")
    assert metrics["mean"]["test"]["acc"] == pytest.approx((((a + b) / 2).argmax(1) == labels).mean())
    assert sorted(metrics["mean"]) == ["public_test", "test"]
    assert _ran(_run(tmp_path / "ensemble.yaml", out)) == []
    np.savez(tmp_path / "other" / "b" / "probs.npz", public_test_labels=labels, test_labels=labels,
             public_test_probs=a, test_probs=a)
    assert _ran(_run(tmp_path / "ensemble.yaml", out)) == ["fused"]
    np.savez(tmp_path / "other" / "b" / "probs.npz", test_labels=(labels + 1) % 7, test_probs=a)
    with pytest.raises(UserError, match="split 'test' is not aligned .* nor is any other split"):
        _run(tmp_path / "ensemble.yaml", out)
    monkeypatch.chdir(tmp_path / "other")  # a --set path is relative to the working directory
    assert load_pipeline(tmp_path / "ensemble.yaml", sets=["stages.fused.inputs.members=[a/probs.npz, b/probs.npz]"])
    with pytest.raises(UserError, match="stages.fused.inputs: file '.*other/c/probs.npz' does not exist"):
        load_pipeline(tmp_path / "ensemble.yaml", sets=["stages.fused.inputs.members=[a/probs.npz, c/probs.npz]"])


def test_kept_networks_fuse_from_the_files_in_the_repository(tmp_path):
    """fer2013_kept.yaml fuses the float16 probabilities committed under results/ (real FER2013
    networks): no data file, no training; its mean is the argmax of the members' mean scores."""
    from fer_lightning.artifacts import load_npz

    pipe = load_pipeline(ROOT / "configs" / "pipelines" / "fer2013_kept.yaml")
    assert _ran(run_pipeline(pipe, tmp_path, log=lambda *_: None)) == ["ensemble", "report"]
    members = [load_npz(p) for p in pipe.stages["ensemble"].inputs["members"]]
    labels = members[0]["private_test_labels"]
    mean = np.mean([z["private_test_probs"] for z in members], axis=0)
    fused = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())["mean"]["private_test"]
    assert fused["n"] == len(labels) > 3000
    assert fused["acc"] == pytest.approx((mean.argmax(1) == labels).mean())
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["tables"][0]["rows"]
    assert len(rows) == len(members) + 3
    assert "paper acc" not in (tmp_path / "report" / "report.md").read_text()  # no paper numbers here
    # --data would be ignored by every stage here: an error, not a run on other data than asked
    with pytest.raises(UserError, match=r"^--data synthetic: no stage of fer2013_kept.yaml reads the pipeline's data"):
        load_pipeline(ROOT / "configs" / "pipelines" / "fer2013_kept.yaml", data="synthetic")


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "pipelines").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_pipeline_plans(path, tmp_path, capsys):
    from fer_lightning.pipeline.cli import pipeline_main

    argv = ["plan", str(path), "--out", str(tmp_path / "out")]
    if path.stem == "fer2013_ensemble":   # its inputs are other runs' files, absent here
        with pytest.raises(UserError, match="inputs: file .*probs.npz' does not exist"):
            pipeline_main(argv)
    else:
        assert pipeline_main(argv) == 0
        assert "[run]" in capsys.readouterr().out
        assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".lock"]  # dry run


def test_files_a_stage_kind_declares_are_part_of_its_key(tmp_path):
    # evaluate's FILE_PARAMS (data, ferplus): editing either file changes the key; a train stage
    # keys on the paths in its data module's init_args.
    from fer_lightning.pipeline.cache import Fingerprints, data_deps
    from fer_lightning.pipeline.spec import Stage

    csv, votes = tmp_path / "fer.csv", tmp_path / "votes.csv"
    csv.write_text("a"), votes.write_text("b")
    def fp():  # each run reads the fingerprints file anew (within one run a file is stamped once)
        return Fingerprints(tmp_path / "fp.json")

    ev = Stage("ev", "evaluate", {"data": str(csv), "ferplus": str(votes), "split": "test"})
    before = data_deps(ev, fp())
    assert sorted(before) == ["data", "ferplus"]
    votes.write_text("changed")
    assert data_deps(ev, fp())["ferplus"] != before["ferplus"] and data_deps(ev, fp())["data"] == before["data"]
    tr = Stage("tr", "train", {"data": {"class_path": "x", "init_args": {"csv_path": str(csv), "batch_size": 8}}})
    assert data_deps(tr, fp()) == {"csv_path": before["data"]}
    # a backbone's local weights file, however deeply nested, is an input too
    weights = tmp_path / "imagenet.pth"
    weights.write_bytes(b"w1")
    net = {"class_path": "FusionNet", "init_args": {"backbone_specs": [
        {"class_path": "TorchvisionNet", "init_args": {"arch": "mobilenet_v2", "weights": str(weights)}}]}}
    tv = Stage("tv", "train", {"model": {"net": net, "optimizer": {"class_path": "torch.optim.Adam"}}})
    first = data_deps(tv, fp())
    assert list(first) == ["model.net.init_args.backbone_specs.0.init_args.weights"]
    weights.write_bytes(b"other weights")
    assert data_deps(tv, fp()) != first


def test_an_image_added_to_or_changed_in_a_class_folder_changes_the_key(tmp_path):
    """A folder's mtime changes only with its direct entries: faces/ stays as it was when an
    image is added to faces/happy/, or one is rewritten in place; the key must not."""
    import os

    from fer_lightning.pipeline.cache import Fingerprints, data_deps
    from fer_lightning.pipeline.spec import Stage

    (tmp_path / "faces/happy/subject1").mkdir(parents=True)
    (tmp_path / "faces/happy/0.png").write_bytes(b"one")
    def fp():  # each run reads the fingerprints file anew
        return Fingerprints(tmp_path / "fp.json")

    tr = Stage("tr", "train", {"data": {"class_path": "x", "init_args": {"train_root": str(tmp_path / "faces")}}})
    keys = [data_deps(tr, fp())]
    (tmp_path / "faces/happy/1.png").write_bytes(b"two")
    keys.append(data_deps(tr, fp()))
    (tmp_path / "faces/happy/subject1/2.png").write_bytes(b"three")
    keys.append(data_deps(tr, fp()))
    mtime = os.stat(tmp_path / "faces/happy/0.png").st_mtime_ns
    (tmp_path / "faces/happy/0.png").write_bytes(b"ONE")        # same size, same name
    os.utime(tmp_path / "faces/happy/0.png", ns=(mtime + 10**9, mtime + 10**9))
    keys.append(data_deps(tr, fp()))
    assert len({k["train_root"] for k in keys}) == 4
    # within one run the folder is stamped once: a change during the run shows in the next one
    run = fp()
    assert data_deps(tr, run) == keys[-1]
    (tmp_path / "faces/happy/3.png").write_bytes(b"four")
    assert data_deps(tr, run) == keys[-1] and data_deps(tr, fp()) != keys[-1]


@pytest.mark.parametrize("manifest", ['[]', '"text"', '{"key": "k"}', '{"key": "k", "outputs": {"probs": {"path": 3}}}',
                                      '{"key": "k", "outputs": []}'])
def test_a_damaged_manifest_means_not_finished(tmp_path, manifest):
    """A manifest edited by hand or written by something else: the stage re-runs, no traceback."""
    from fer_lightning.pipeline.cache import check_done

    (tmp_path / "manifest.json").write_text(manifest)
    assert check_done(tmp_path, "k") == (False, "no finished run")


@pytest.mark.parametrize("cache", ['[]', '{"PATH": 3}', '{"PATH": [[1, 2]]}', '{"PATH": [1, 2]}'])
def test_a_damaged_fingerprint_cache_is_recomputed(tmp_path, cache):
    from fer_lightning.artifacts import fingerprint_path
    from fer_lightning.pipeline.cache import Fingerprints

    data = tmp_path / "fer.csv"
    data.write_text("emotion,pixels,Usage\n")
    (tmp_path / "fp.json").write_text(cache.replace("PATH", str(data)))
    assert Fingerprints(tmp_path / "fp.json").of(data) == fingerprint_path(data)


def test_data_option_picks_the_data_module_from_the_path(tmp_path):
    from fer_lightning.pipeline.spec import data_spec_for

    (tmp_path / "jaffe").mkdir(), (tmp_path / "jaffe/KA.HA1.29.tiff").write_bytes(b"")
    (tmp_path / "kaggle/train/happy").mkdir(parents=True), (tmp_path / "kaggle/test/happy").mkdir(parents=True)
    (tmp_path / "faces/happy").mkdir(parents=True)
    (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n")
    spec = {name: data_spec_for(str(tmp_path / name)) for name in ("jaffe", "kaggle", "faces", "fer.csv")}
    assert {n: s["class_path"].rsplit(".", 1)[1] for n, s in spec.items()} == {
        "jaffe": "JAFFEDataModule", "kaggle": "ImageFolderDataModule", "faces": "ImageFolderDataModule",
        "fer.csv": "FER2013DataModule"}
    assert spec["kaggle"]["init_args"] == {"train_root": str(tmp_path / "kaggle/train"),
                                           "test_root": str(tmp_path / "kaggle/test")}
    assert spec["faces"]["init_args"] == {"train_root": str(tmp_path / "faces")}
    with pytest.raises(UserError, match="fer.csv.gz: data file not found"):
        data_spec_for(str(tmp_path / "fer.csv.gz"))


def test_data_of_another_kind_drops_the_files_split_labels(tmp_path):
    """fer2013_fusion.yaml labels its test column "test (Public+Private)": FER2013's splits. Run on
    another kind of dataset (--data) the label would be false, so it goes; a FER2013 CSV keeps it,
    and --set can give one again."""
    path = ROOT / "configs" / "pipelines" / "fer2013_fusion.yaml"

    def labels(**kw):
        return load_pipeline(path, **kw).stages["report"].config.get("split_labels")

    assert labels() == {"test": "test (Public+Private)"}
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n")
    assert labels(data=str(csv)) == {"test": "test (Public+Private)"}
    assert labels(data="synthetic") is None
    assert labels(data="synthetic", sets=["stages.report.params.split_labels.test=test (my faces)"]) == \
        {"test": "test (my faces)"}


def test_set_indexes_into_lists():
    """``--set a.b.0=...`` edits a list's item; past its end, or into a scalar, is one line."""
    path = ROOT / "configs" / "pipelines" / "fer2013_kept.yaml"
    pipe = load_pipeline(path, sets=["stages.report.params.splits.1=private_test",
                                     "stages.report.params.tables.0.rows.0.label=first"])
    assert pipe.stages["report"].config["splits"] == ["private_test", "private_test"]
    assert pipe.stages["report"].config["tables"][0]["rows"][0]["label"] == "first"
    with pytest.raises(UserError, match=r"^--set stages.report.params.splits.2: 'stages.report.params.splits' "
                                        r"is a list of 2: '2' is no index of it \(0 to 1\)"):
        load_pipeline(path, sets=["stages.report.params.splits.2=x"])
    with pytest.raises(UserError, match=r"'stages.report.params.title' is '.*', not a mapping or a list$"):
        load_pipeline(path, sets=["stages.report.params.title.x=1"])
