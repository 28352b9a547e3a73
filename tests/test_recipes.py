"""Issue 8's options: augmentation and mixing recipes, TTA, weighted score fusion, FER+ labels,
and the recipes pipeline end to end at tiny size."""

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, run_pipeline_cli, write_fer_csv
from fer_lightning.errors import UserError
from fer_lightning.pipeline.runner import run_pipeline
from fer_lightning.pipeline.spec import load_pipeline


def test_pad_crop_shifts_whole_pixels_and_erasing_blanks_a_rectangle():
    from fer_lightning.data import BatchAugment

    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16) * 0.4 + 0.55   # no pixel is 0 or 0.5 before
    crop = BatchAugment(pad_crop=3)
    assert crop(x).shape == x.shape
    y = crop._pad_crop(x)   # the crop alone: the affine part resamples
    for a, b in zip(x, y):   # every output pixel is an input pixel or padding
        assert set(b.flatten().tolist()) <= set(a.flatten().tolist()) | {0.0}
    z = BatchAugment(erase_p=1.0)._erase(x)
    blanked = (z == 0.5).flatten(1).sum(1)
    assert (blanked >= 0.02 * 256 * 0.5).all() and (blanked <= 0.25 * 256 + 16).all()


@pytest.mark.parametrize("mixup,cutmix", [(0.2, 0.0), (0.0, 1.0)])
def test_mixing_keeps_shapes_and_reports_the_share(mixup, cutmix):
    from fer_lightning.models import CNN2
    from fer_lightning.module import ClassifierModule

    module = ClassifierModule(CNN2(widths=(4, 4, 4, 4), fc=(8, 8)), mixup_alpha=mixup, cutmix_alpha=cutmix)
    x, y = torch.randn(6, 1, 48, 48), torch.arange(6) % 7
    mixed, y2, lam = module._mix(x, y)
    assert mixed.shape == x.shape and sorted(y2.tolist()) == sorted(y.tolist()) and 0 <= lam <= 1
    assert not torch.equal(mixed, x) or lam == 1.0


def test_tta_views_are_flips_and_five_crops_of_the_edge_padded_face():
    from torchvision.transforms.v2.functional import five_crop

    from fer_lightning.tta import check_tta, tta_probs

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))   # sees every pixel
    x = torch.randn(5, 1, 48, 48)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="replicate")
    views = [x, *five_crop(padded, [48, 48])[:4]]                  # the face + its 4 corner crops
    views += [v.flip(-1) for v in views]
    expected = torch.stack([net(v).softmax(-1) for v in views]).mean(0)
    with torch.no_grad():
        assert torch.allclose(tta_probs(net, x, "flip_crops"), expected, atol=1e-6)
        five = torch.stack([net(v).softmax(-1) for v in views[:5]]).mean(0)
        assert torch.allclose(tta_probs(net, x, "crops"), five, atol=1e-6)
        mirror = torch.cat([x[..., :24], x[..., :24].flip(-1)], -1)  # symmetric faces: flip changes nothing
        assert torch.allclose(tta_probs(net, mirror, "flip"), tta_probs(net, mirror, "none"), atol=1e-6)
        assert not torch.allclose(tta_probs(net, x, "crops"), tta_probs(net, x, "none"), atol=1e-3)
    with pytest.raises(ValueError, match="tta: 'ten_crop'"):
        check_tta("ten_crop")
    with pytest.raises(ValueError, match="tta: 'zoom_flip'.*in that order"):
        check_tta("zoom_flip")


def test_rotate_and_zoom_views_are_torchvisions_rotations_and_scalings():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from fer_lightning.tta import tta_probs, tta_views

    torch.manual_seed(0)
    x = torch.zeros(3, 1, 48, 48)
    x[..., 12:36, 10:30] = torch.rand(3, 1, 24, 20)    # a dark border: edge padding = torchvision's zeros
    bilinear = InterpolationMode.BILINEAR
    turned = [TF.rotate(x, d, interpolation=bilinear) for d in (-8.0, 8.0)]
    turned += [TF.affine(x, angle=0.0, translate=[0, 0], scale=z, shear=[0.0, 0.0], interpolation=bilinear)
               for z in (0.92, 1.08)]
    views = tta_views(x, "rotate_zoom")
    assert len(views) == 4 and all(torch.allclose(v, t, atol=1e-5) for v, t in zip(views, turned))
    assert len(tta_views(x, "flip_crops_rotate_zoom")) == 17   # + the face: 18 views
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))
    every = [x, *tta_views(x, "crops"), *turned]
    every += [v.flip(-1) for v in every]
    expected = torch.stack([net(v).softmax(-1) for v in every]).mean(0)
    assert torch.allclose(tta_probs(net, x, "flip_crops_rotate_zoom"), expected, atol=1e-6)


def test_weighted_fusion_trusts_the_better_member():
    from stages.score_fusion import fit_weights, fuse_scores

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    good = np.full((300, 7), 0.02)
    good[np.arange(300), labels] = 0.88
    noise = rng.dirichlet(np.ones(7), 300)
    w = fit_weights([good, noise], labels)
    assert w[0] > 0.9 and abs(w.sum() - 1) < 1e-9
    fused = fuse_scores([good, noise], "weighted", w)
    assert (fused.argmax(1) == labels).mean() == 1.0


def _votes_csv(path, votes):
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    path.write_text(header + "\n" + "\n".join("Training,x.png," + ",".join(map(str, v)) for v in votes) + "\n")
    return path


def test_ferplus_majority_and_soft_labels_drop_contempt_unknown_and_non_faces(tmp_path):
    from fer_lightning.data.fer2013 import read_ferplus

    votes = [[6, 4, 0, 0, 0, 0, 0, 0, 0, 0],   # neutral (6/10), happiness (4/10)
             [0, 0, 0, 0, 7, 2, 0, 0, 1, 0],   # anger -> angry; the unknown vote leaves the distribution
             [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],   # contempt: dropped
             [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]]   # not a face: dropped
    labels, soft, keep = read_ferplus(_votes_csv(tmp_path / "v.csv", votes), 4)
    assert keep.tolist() == [True, True, False, False] and labels[:2].tolist() == [6, 0]
    # our class order: angry, disgust, fear, happy, sad, surprise, neutral
    np.testing.assert_allclose(soft[0], [0, 0, 0, 0.4, 0, 0, 0.6])
    np.testing.assert_allclose(soft[1], [7 / 9, 2 / 9, 0, 0, 0, 0, 0], rtol=1e-6)
    with pytest.raises(UserError, match="row-aligned"):
        read_ferplus(tmp_path / "v.csv", 5)
    (tmp_path / "bad.csv").write_text((tmp_path / "v.csv").read_text().replace(",7,", ",x,"))
    with pytest.raises(UserError, match="bad.csv: line 3"):
        read_ferplus(tmp_path / "bad.csv", 4)
    # as Excel saves it ("CSV UTF-8": a byte-order mark first), gzipped, or the wrong file
    import gzip

    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "v.csv").read_bytes())
    (tmp_path / "v.csv.gz").write_bytes(gzip.compress((tmp_path / "v.csv").read_bytes()))
    for same in ("bom.csv", "v.csv.gz"):
        np.testing.assert_array_equal(read_ferplus(tmp_path / same, 4)[1], soft)
    (tmp_path / "v.bin").write_bytes(gzip.compress(b"x"))   # a gzip file without the .gz suffix
    with pytest.raises(UserError, match=r"v.bin: cannot read as text"):
        read_ferplus(tmp_path / "v.bin", 4)


def test_ferplus_votes_as_a_teacher_of_the_original_labels(tmp_path):
    """bench/ferplus_teacher.py: the votes of every Training row as a distillation teacher; rows
    FER+ drops keep their original one-hot label; other splits play no part."""
    import sys

    from conftest import ROOT
    from fer_lightning.data import FER2013DataModule

    sys.path.insert(0, str(ROOT / "bench"))
    from ferplus_teacher import ferplus_targets

    rows = [(3, [0] * 2304, "Training"), (0, [1] * 2304, "Training"), (5, [2] * 2304, "Training"),
            (6, [3] * 2304, "PublicTest"), (6, [4] * 2304, "PrivateTest")]
    votes = [[6, 4, 0, 0, 0, 0, 0, 0, 0, 0],   # neutral 6, happiness 4: the original says happy
             [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],   # contempt: FER+ drops it, the original (angry) stays
             [0, 0, 10, 0, 0, 0, 0, 0, 0, 0], [10] + [0] * 9, [10] + [0] * 9]
    csv_path = write_fer_csv(tmp_path / "fer.csv", rows)
    probs, labels, agree = ferplus_targets(csv_path, _votes_csv(tmp_path / "votes.csv", votes))
    np.testing.assert_allclose(probs, [[0, 0, 0, 0.4, 0, 0, 0.6], [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]])
    assert labels.tolist() == [3, 0, 5] and agree == 0.5
    np.savez(tmp_path / "teacher.npz", train_probs=probs, train_labels=labels)
    dm = FER2013DataModule(str(csv_path), val_split="PublicTest", teacher_probs=str(tmp_path / "teacher.npz"),
                           teacher_weight=0.5, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    torch.testing.assert_close(dm.train_targets[0], torch.tensor([0, 0, 0, 0.7, 0, 0, 0.3]))


def test_ferplus_soft_labels_train_on_distributions_and_score_on_majority(tmp_path):
    import lightning as L

    from fer_lightning.data import FER2013DataModule
    from fer_lightning.models import CNN2
    from fer_lightning.module import ClassifierModule

    rng = np.random.default_rng(0)
    usage = [u for u, n in (("Training", 40), ("PublicTest", 14), ("PrivateTest", 14)) for _ in range(n)]
    rows = [(i % 7, rng.integers(0, 256, 48 * 48), u) for i, u in enumerate(usage)]
    votes = [[int(v) for v in rng.multinomial(10, [0.12] * 7 + [0.02, 0.01, 0.01])] for _ in rows]
    for v in votes:
        v[0] += 5   # neutral always wins: no row is dropped
    csv_path = write_fer_csv(tmp_path / "fer.csv", rows)
    votes_path = _votes_csv(tmp_path / "votes.csv", votes)
    dm = FER2013DataModule(str(csv_path), ferplus_csv=str(votes_path), ferplus_labels="soft", batch_size=8,
                           val_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert y.dtype == torch.float32 and y.shape == (8, 7)
    torch.testing.assert_close(y.sum(1), torch.ones(8))
    assert dm.split("val")[1].dtype == torch.int64 and (dm.split("val")[1] == 6).all()  # majority: neutral
    module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert trainer.callback_metrics["val/acc"] >= 0
    with pytest.raises(UserError, match="ferplus_labels: soft needs data.ferplus_csv"):
        FER2013DataModule(str(csv_path), ferplus_labels="soft")


def test_distillation_blends_the_teachers_training_scores_with_the_labels(tmp_path):
    from fer_lightning.data import FER2013DataModule

    rng = np.random.default_rng(3)
    usage = [u for u, n in (("Training", 20), ("PublicTest", 7), ("PrivateTest", 7)) for _ in range(n)]
    csv_path = write_fer_csv(tmp_path / "fer.csv", [(i % 7, rng.integers(0, 256, 48 * 48), u)
                                                    for i, u in enumerate(usage)])
    labels = np.arange(20) % 7     # val_split PublicTest: the training split is all 20 Training rows
    teacher = rng.dirichlet(np.ones(7), 20).astype(np.float32)
    np.savez(tmp_path / "ens.npz", mean_train_probs=teacher, train_labels=labels)   # a score-fusion file
    dm = FER2013DataModule(str(csv_path), val_split="PublicTest", batch_size=20, seed=0,
                           cache_dir=str(tmp_path / "cache"), teacher_probs=str(tmp_path / "ens.npz"),
                           teacher_weight=0.25)
    dm.setup()
    expected = 0.25 * teacher + 0.75 * np.eye(7, dtype=np.float32)[labels]
    np.testing.assert_allclose(dm.train_targets.numpy(), expected, rtol=1e-6)
    _, y = next(iter(dm.train_dataloader()))            # the training batches carry the blend
    assert y.dtype == torch.float32 and y.shape == (20, 7)
    assert dm.split("val")[1].dtype == torch.int64     # validation is scored on the labels

    def setup_with(**arrays):
        np.savez(tmp_path / "t.npz", **arrays)
        FER2013DataModule(str(csv_path), val_split="PublicTest", cache_dir=str(tmp_path / "cache"),
                          teacher_probs=str(tmp_path / "t.npz")).setup()

    with pytest.raises(UserError, match="t.npz: its training split .20 rows. is not this one"):
        setup_with(train_probs=teacher, train_labels=(labels + 1) % 7)   # another split's rows
    with pytest.raises(UserError, match="no training-split scores"):
        setup_with(test_probs=teacher, test_labels=labels)
    with pytest.raises(UserError, match=r"train_probs has shape \(20, 5\)"):
        setup_with(train_probs=teacher[:, :5], train_labels=labels)
    with pytest.raises(UserError, match="data.teacher_weight: 1.5 must lie in"):
        FER2013DataModule(str(csv_path), teacher_weight=1.5)


def test_distillation_with_any_data_module(tiny_pipeline, tmp_path):
    # the teacher mechanism lives in TensorDataModule: here CNN2 on synthetic faces, taught by CNN1
    from fer_lightning.data import SyntheticFacesDataModule
    from fer_lightning.pipeline.spec import load_pipeline

    pipe = load_pipeline(tiny_pipeline, sets=["stages.cnn2.inputs={teacher: cnn1.probs}"])
    statuses = run_pipeline(pipe, tmp_path / "out", only=["cnn1", "cnn2"], log=lambda *_: None)
    assert statuses["cnn2"] == "run" and statuses["cnn1"] == "run"
    student = yaml.safe_load((tmp_path / "out/cnn2/config.yaml").read_text())
    teacher_file = tmp_path / "out/cnn1/probs.npz"
    assert student["data"]["init_args"]["teacher_probs"] == str(teacher_file)   # what the stage trained with
    dm = SyntheticFacesDataModule(num_train=140, num_val=70, num_test=70, teacher_probs=str(teacher_file),
                                  teacher_weight=0.5)
    dm.setup()
    with np.load(teacher_file) as f:
        expected = 0.5 * f["train_probs"] + 0.5 * np.eye(7, dtype=np.float32)[f["train_labels"]]
    np.testing.assert_allclose(dm.train_targets.numpy(), expected, rtol=1e-6)
    assert json.loads((tmp_path / "out/cnn2/manifest.json").read_text())["inputs"]["cnn1.probs"]


TINY = """
base: {base}
name: tiny_recipes
data:
  init_args: {{csv_path: {csv}, ferplus_csv: {votes}, batch_size: 16, eval_batch_size: 64}}
trainer: {{max_epochs: 1, accelerator: cpu, enable_model_summary: false, limit_train_batches: 2}}
"""


def test_recipes_pipeline_end_to_end_on_tiny_ferplus(tmp_path):
    rng = np.random.default_rng(0)
    usage = [u for u, n in (("Training", 48), ("PublicTest", 21), ("PrivateTest", 21)) for _ in range(n)]
    rows = [(i % 7, rng.integers(0, 256, 48 * 48), u) for i, u in enumerate(usage)]
    csv_path = write_fer_csv(tmp_path / "fer.csv", rows)
    votes = [[0] * 10 for _ in rows]
    for i, v in enumerate(votes):   # majority = original label's FER+ column; every 10th row: NF
        v[9 if i % 10 == 0 else [4, 5, 6, 1, 3, 2, 0][i % 7]] = 10
    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY.format(base=ROOT / "configs/pipelines/fer2013_recipes.yaml", csv=csv_path,
                                votes=_votes_csv(tmp_path / "votes.csv", votes)))
    small = "{model: {net: {init_args: {widths: [4, 4, 8, 8], fc: [16, 8], batchnorm: true}}}}"
    sets = [f"--set=stages.{s}.params={small}" for s in ("baseline", "nesterov_plateau", "nesterov_cosine",
            "label_smoothing", "mixup", "cutmix", "erasing_padcrop", "combined")]
    run_pipeline_cli(pipe, tmp_path / "out", *sets)
    ens = json.loads((tmp_path / "out/ensemble/metrics.json").read_text())
    assert ens["weighted"]["fit_split"] == "public_test" and len(ens["weighted"]["weights"]) == 7
    m = json.loads((tmp_path / "out/combined/metrics.json").read_text())
    n_nf = sum(1 for i, u in enumerate(usage) if u == "PrivateTest" and i % 10 == 0)
    assert m["private_test"]["n"] == 21 - n_nf   # FER+ dropped the not-a-face rows
    report = json.loads((tmp_path / "out/report/report.json").read_text())
    assert len(report["tables"][0]["rows"]) == 11


def _run_tiny_fer2013_pipeline(tmp_path, pipeline: str, seed: int, *sets: str):
    """``configs/pipelines/<pipeline>.yaml`` for 1 epoch on a tiny FER2013 CSV (32 training rows, 14
    each test split), run through the CLI into ``tmp_path/out``."""
    rng = np.random.default_rng(seed)
    usage = [u for u, n in (("Training", 32), ("PublicTest", 14), ("PrivateTest", 14)) for _ in range(n)]
    csv_path = write_fer_csv(tmp_path / "fer.csv", [(i % 7, rng.integers(0, 256, 48 * 48), u)
                                                    for i, u in enumerate(usage)])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"base: {ROOT / 'configs/pipelines' / pipeline}.yaml\nname: tiny_{pipeline}\n"
                    f"data: {{init_args: {{csv_path: {csv_path}, batch_size: 16, eval_batch_size: 64}}}}\n"
                    "trainer: {max_epochs: 1, accelerator: cpu, enable_model_summary: false}\n")
    run_pipeline_cli(pipe, tmp_path / "out", *sets)


def test_sota_pipeline_end_to_end_on_tiny_fer2013(tmp_path):
    # The real ResNet-18 (its widths are torchvision's), a narrow VGG, both with flip TTA.
    small = "{model: {net: {init_args: {widths: [4, 4, 8, 8], fc: [16, 8]}}}}"
    _run_tiny_fer2013_pipeline(tmp_path, "fer2013_sota", 1, f"--set=stages.vggnet.params={small}")
    for stage in ("vggnet", "resnet18"):
        m = json.loads((tmp_path / "out" / stage / "metrics.json").read_text())
        assert m["private_test"]["n"] == 14 and 0 <= m["private_test"]["acc"] <= 1
    ens = json.loads((tmp_path / "out/ensemble/metrics.json").read_text())
    assert len(ens["weighted"]["weights"]) == 2
    report = (tmp_path / "out/report/report.md").read_text()
    assert "73.28" in report and "ResNet-18" in report
    _rescored_under_its_own_tta_the_checkpoint_gives_the_exported_scores(tmp_path, "vggnet")


def _rescored_under_its_own_tta_the_checkpoint_gives_the_exported_scores(tmp_path, stage):
    """bench/tta_rescore.py scores a finished stage's checkpoint under a TTA of the user's: under the
    stage's own (flip) it gives the probabilities and accuracies the stage exported."""
    import sys

    from fer_lightning.artifacts import load_npz

    sys.path.insert(0, str(ROOT / "bench"))
    from tta_rescore import read_test_splits, rescore

    kept = rescore(tmp_path / "out" / stage, read_test_splits(str(tmp_path / "fer.csv")), "flip", tmp_path / "kept")
    assert kept.name == f"{stage}_flip.npz"
    ours, theirs = load_npz(kept), load_npz(tmp_path / "out" / stage / "probs.npz")
    exported = json.loads((tmp_path / "out" / stage / "metrics.json").read_text())
    rescored = json.loads(kept.with_suffix(".json").read_text())
    for split in ("public_test", "private_test"):
        assert np.allclose(ours[f"{split}_probs"], theirs[f"{split}_probs"], atol=1e-3)  # float16 kept
        assert np.array_equal(ours[f"{split}_labels"], theirs[f"{split}_labels"])
        assert rescored[split]["acc"] == pytest.approx(exported[split]["acc"])
    assert "train_probs" not in ours and rescored["tta"] == "flip"


def test_cpu_ensemble_and_distilled_student_end_to_end_on_tiny_fer2013(tmp_path):
    # fer2013_cpu.yaml's pair plus fer2013_cpu_ensemble.yaml's four extra members (paper 004's CNN at
    # 48×48 among them), all through the base-file merge, the fusion of all six, then
    # fer2013_cpu_distill.yaml's student trained on the fusion's training-split scores.
    net = "--set=stages.{}.params.model.net.init_args.{}"
    sets = [net.format(s, a) for s in ("vgg_adam", "vgg_sgd", "vgg_wide", "vgg_20ep", "student")
            for a in ("widths=[4, 4, 8, 8]", "fc=[8]")]
    sets += [net.format(s, a) for s in ("attention", "attention_cos")
             for a in ("stream_widths=[4, 8]", "res_widths=[8, 8]", "fc=[16, 8]")]
    sets += [f"--set=stages.{s}.params.trainer.max_epochs={n}" for s, n in
             (("vgg_20ep", 2), ("attention", 1), ("attention_cos", 1))]
    _run_tiny_fer2013_pipeline(tmp_path, "fer2013_cpu_distill", 2, *sets)
    m = json.loads((tmp_path / "out/vgg_20ep/metrics.json").read_text())
    assert m["epochs_trained"] == 2 and m["private_test"]["n"] == 14
    att = yaml.safe_load((tmp_path / "out/attention_cos/config.yaml").read_text())
    assert att["model"]["net"]["init_args"]["input_size"] == 48 and att["model"]["tta"] == "flip"
    assert att["data"]["init_args"]["batch_size"] == 32 and att["model"]["optimizer"]["init_args"]["lr"] == 0.001
    ens = json.loads((tmp_path / "out/ensemble/metrics.json").read_text())
    assert len(ens["weighted"]["weights"]) == 6
    student = yaml.safe_load((tmp_path / "out/student/config.yaml").read_text())["data"]["init_args"]
    assert student["teacher_probs"] == str(tmp_path / "out/ensemble/probs.npz") and student["teacher_weight"] == 0.5
    assert json.loads((tmp_path / "out/student/metrics.json").read_text())["private_test"]["n"] == 14
    report = json.loads((tmp_path / "out/report/report.json").read_text())
    assert [r["label"] for r in report["tables"][0]["rows"]][1].startswith("The same, distilled")


def test_gpu_ensemble_pipeline_trains_four_kinds_with_two_seeds(tmp_path):
    # fer2013_gpu_ensemble.yaml as resolved (base merge, per-stage seeds, lengths and precision) and
    # planned; its stages' configs are the ones the sota and cpu pipelines above run end to end.
    pipe = load_pipeline(ROOT / "configs/pipelines/fer2013_gpu_ensemble.yaml", data="synthetic")
    trains = {n: s.config for n, s in pipe.stages.items() if s.kind == "train"}
    got = {n: (c["seed_everything"], c["trainer"]["max_epochs"], c["trainer"]["precision"]) for n, c in trains.items()}
    assert got == {"vggnet@0": (0, 40, "bf16-mixed"), "resnet18@0": (0, 40, "bf16-mixed"),
                   "vggnet@1": (1, 40, "bf16-mixed"), "resnet18@1": (1, 40, "bf16-mixed"),
                   "vgg_adam@0": (0, 100, "32-true"), "vgg_sgd@0": (0, 100, "32-true"),
                   "vgg_adam@1": (1, 100, "32-true"), "vgg_sgd@1": (1, 100, "32-true")}
    assert all(c["model"]["tta"] == "flip" for c in trains.values())
    # the copies are the members, one after the other (not a list of lists)
    assert pipe.stages["ensemble"].inputs["members"] == [f"{n}.probs" for n in trains]
    assert pipe.stages["report"].inputs["vggnet"] == ["vggnet@0.metrics", "vggnet@1.metrics"]
    statuses = run_pipeline(pipe, tmp_path / "out", dry_run=True, log=lambda *_: None)
    assert set(statuses.values()) == {"run"} and not (tmp_path / "out" / "vggnet@0").exists()


def test_best_cpu_pipeline_is_the_measured_150_epoch_command_with_18_views(tmp_path):
    # fer2013_cpu_best.yaml names the recipe docs/results.md measured as `--set` options on
    # fer2013_cpu.yaml's vgg_sgd (its 150-epoch command); the only difference is that the stage
    # exports 18 views itself instead of bench/tta_rescore.py re-scoring the checkpoint.
    measured = load_pipeline(ROOT / "configs/pipelines/fer2013_cpu.yaml", data="synthetic", sets=[
        "stages.vgg_sgd.params.model.net.init_args.widths=[32,64,128,256]",
        "stages.vgg_sgd.params.model.net.init_args.fc=[256]", "trainer.max_epochs=150",
        "trainer.precision=bf16-mixed", "seed=3", "stages.vgg_sgd.params.model.mixup_alpha=0.2",
        "data.init_args.augment.init_args.erase_p=0.5"]).stages["vgg_sgd"].config
    named = load_pipeline(ROOT / "configs/pipelines/fer2013_cpu_best.yaml", data="synthetic")
    assert [n for n, s in named.stages.items() if s.kind == "train"] == [f"vgg@{s}" for s in range(5)]
    ours = named.stages["vgg@3"].config
    assert measured["model"]["tta"] == "flip" and ours["model"]["tta"] == "flip_crops_rotate_zoom"
    measured["model"]["tta"] = ours["model"]["tta"]
    assert ours == measured
    assert named.stages["ensemble"].inputs["members"] == [f"vgg@{s}.probs" for s in range(5)]


def test_best_cpu_pipeline_end_to_end_on_tiny_fer2013(tmp_path):
    # Two of its seeds, a tiny width and one epoch: 18-view export of every split, fusion, report.
    small = "{model: {net: {init_args: {widths: [4, 4, 8, 8], fc: [8]}}}}"
    _run_tiny_fer2013_pipeline(tmp_path, "fer2013_cpu_best", 3, f"--set=stages.vgg.params={small}",
                               "--set=stages.vgg.foreach.seed=[0,1]")
    for seed in (0, 1):
        m = json.loads((tmp_path / "out" / f"vgg@{seed}" / "metrics.json").read_text())
        assert m["private_test"]["n"] == 14 and m["train"]["n"] == 32
    ens = json.loads((tmp_path / "out/ensemble/metrics.json").read_text())
    assert len(ens["weighted"]["weights"]) == 2
    report = (tmp_path / "out/report/report.md").read_text()
    assert "five seeds" in report and "73.28" in report
