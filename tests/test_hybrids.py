"""Papers 003 and 001: torchvision backbones, local weights, the fusion variants, HOG/LBP, the
feature head, foreach copies, and both pipelines end to end at tiny size."""

import json

import re

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED_DATA, run_pipeline_cli, write_fer_csv
from fer_lightning.errors import UserError

JAFFE = SHARED_DATA / "jaffe"


def _tiny_tv(**kw):
    from fer_lightning.models import TorchvisionNet

    return TorchvisionNet(**{"arch": "mobilenet_v3_small", "input_size": 32, "head": [16], **kw})


def test_torchvision_net_resizes_grey_batches_on_the_device():
    net = _tiny_tv().eval()
    x = torch.randn(3, 1, 48, 48)
    assert net(x).shape == (3, 7)
    assert net.pooled(x).shape == (3, net.pooled_dim) and net.features(x).shape == (3, 16)


def test_local_weights_are_loaded_and_not_needed_again(tmp_path):
    import torchvision

    from fer_lightning.checkpoints import build_net, net_spec

    src = torchvision.models.mobilenet_v3_small(num_classes=1000)
    path = tmp_path / "mnv3.pth"
    torch.save(src.state_dict(), path)
    net = _tiny_tv(weights=str(path))
    for k, v in src.features.state_dict().items():
        assert torch.equal(net.body.state_dict()[k], v)
    # a checkpoint records weights: null — the weights are in the state dict
    assert net_spec(net)["init_args"]["weights"] is None
    build_net(net_spec(net))


def test_bad_weights_files_are_one_line_errors(tmp_path):
    import torchvision

    with pytest.raises(UserError, match="never downloaded"):
        _tiny_tv(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="never downloaded"):
        _tiny_tv(weights="IMAGENET1K_V1")
    other = tmp_path / "effnet.pth"
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), other)
    with pytest.raises(UserError, match="not a mobilenet_v3_small state dict"):
        _tiny_tv(weights=str(other))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a readable"):
        _tiny_tv(weights=str(junk))
    with pytest.raises(UserError, match="arch"):
        _tiny_tv(arch="resnet9000")


@pytest.mark.parametrize("freeze", [True, False])
def test_fusion_freezes_or_fine_tunes_the_backbones(freeze):
    from fer_lightning.checkpoints import net_spec
    from fer_lightning.models import FusionNet

    specs = [net_spec(_tiny_tv(head=[])), net_spec(_tiny_tv(head=[]))]
    net = FusionNet(backbone_specs=specs, layer="pooled", hidden=[32, 16], dropout=0.2, freeze=freeze).train()
    assert net.feature_dim == 16
    net(torch.randn(4, 1, 40, 40)).sum().backward()
    grads = [p.grad is not None for p in net.backbones.parameters() if p.requires_grad or freeze]
    assert (not any(grads)) if freeze else all(p.grad is not None for p in net.backbones[0].body.parameters())
    assert all(not b.training for b in net.backbones) == freeze


def test_fusion_layer_errors():
    from fer_lightning.checkpoints import net_spec
    from fer_lightning.models import CNN2, FusionNet

    with pytest.raises(UserError, match="no 'pooled' output"):
        FusionNet(backbone_specs=[net_spec(CNN2(widths=(4, 4, 4, 4), fc=(8, 8)))], layer="pooled")


def test_hog_lbp_dimensions_match_the_paper_settings():
    from fer_lightning.handcrafted import hog_lbp

    imgs = np.random.default_rng(0).integers(0, 256, (2, 1, 48, 48), dtype=np.uint8)
    # HOG: (48/8 - 1)^2 blocks x 2x2 cells x 9 bins = 900; LBP: 7x7 cells x (8 + 2) bins = 490
    assert hog_lbp(imgs, {}, None).shape == (2, 900)
    assert hog_lbp(imgs, None, {}).shape == (2, 490)
    both = hog_lbp(imgs, {}, {})
    assert both.shape == (2, 1390) and np.isfinite(both).all()
    lbp = hog_lbp(imgs, None, {"grid": 1})
    assert np.allclose(lbp.sum(1), 1.0)  # one normalised histogram


@pytest.mark.parametrize("params, message", [
    ({"hog": {"orientation": 9}}, "hog/lbp settings: hog() got an unexpected keyword argument 'orientation'"),
    ({"hog": {"pixels_per_cell": [64, 64]}}, "hog/lbp settings: "),        # cells larger than the face
    ({"lbp": {"grid": 0}}, "hog/lbp settings: "),
    ({"hog": None, "lbp": None}, "hog/lbp settings: hog_lbp: ask for hog, lbp or both"),
    ({"pca": "all"}, ".pca: 'all': expected a share of variance"),
])
def test_handcrafted_settings_are_checked_before_any_stage(params, message):
    """They failed inside the stage, after the CNNs before it had trained (skimage's TypeError)."""
    from fer_lightning.errors import UserError
    from stages import handcrafted

    handcrafted.check("hog_lbp", {"data": {"init_args": {"image_size": 48}}}, None)   # the defaults pass
    with pytest.raises(UserError) as e:
        handcrafted.check("hog_lbp", {"data": {"init_args": {"image_size": 48}}, **params}, None)
    assert str(e.value).startswith("stages.hog_lbp.params") and message in str(e.value)


def test_features_data_module_checks_that_labels_agree(tmp_path):
    from fer_lightning.artifacts import atomic_save_npz
    from fer_lightning.data import FeaturesDataModule

    y = np.arange(6) % 7
    for name, labels in (("a", y), ("b", y), ("c", y[::-1].copy())):
        atomic_save_npz(tmp_path / f"{name}.npz", **{f"{s}_features": np.ones((6, 3), np.float32)
                                                     for s in ("train", "val", "test")},
                        **{f"{s}_labels": labels for s in ("train", "val", "test")})
    dm = FeaturesDataModule(paths=[str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    assert dm.feature_dim == 6
    with pytest.raises(UserError, match="labels differ"):
        FeaturesDataModule(paths=[str(tmp_path / "a.npz"), str(tmp_path / "c.npz")]).setup()
    with pytest.raises(UserError, match="no 'train_pooled'"):
        FeaturesDataModule(paths=[str(tmp_path / "a.npz")], keys="pooled").setup()


def test_foreach_copies_and_binding(tmp_path):
    from fer_lightning.pipeline.spec import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("""
data: {class_path: fer_lightning.data.SyntheticFacesDataModule}
stages:
  a: {kind: train, foreach: {data.init_args.seed: [1, 2]}}
  b: {kind: probe, foreach: {seed: [1, 2]}, inputs: {features: {a: a.features}}}
  r: {kind: report, inputs: {b: b.metrics}}
""")
    pipe = load_pipeline(p)
    assert list(pipe.stages) == ["a@1", "b@1", "a@2", "b@2", "r"] or set(pipe.stages) == {"a@1", "a@2", "b@1", "b@2", "r"}
    assert pipe.stages["a@2"].config["data"]["init_args"]["seed"] == 2
    assert "init_args" not in pipe.stages["a@1"].config["data"] or pipe.stages["a@1"].config["data"]["init_args"]["seed"] == 1
    assert pipe.stages["b@2"].inputs == {"features": {"a": "a@2.features"}}
    assert pipe.stages["r"].inputs == {"b": ["b@1.metrics", "b@2.metrics"]}
    p.write_text(p.read_text().replace("foreach: {seed: [1, 2]}", "foreach: {seed: [1, 3]}"))
    with pytest.raises(UserError, match=r"both stages loop over 'seed', but over different values \(\[1, 2\] and \[1, 3\]\)"):
        load_pipeline(p)
    p.write_text(p.read_text().replace("foreach: {seed: [1, 3]}", "foreach: {run: [1, 2]}"))
    # a key's last name is its dimension: 'run' is not 'data.init_args.seed', so no copy of a is b@1's
    with pytest.raises(UserError, match="'a' loops over seed and 'b' over run, with no dimension in common"):
        load_pipeline(p)
    for bad in ("1.5", "a/b", "x@y", "true"):   # each names a copy: <stage>@<value>, a folder and a reference
        p.write_text(re.sub(r"run: \[[^]]*\]", f"run: [{bad}]", p.read_text()))
        with pytest.raises(UserError, match="must be an integer or a name of letters, digits"):
            load_pipeline(p)


def test_foreach_over_several_keys_runs_every_combination(tmp_path):
    # seeds × folds: each combination a copy, stage@<seed>@<fold>; a reference binds on the
    # dimensions both stages loop over and takes every copy along the rest
    from fer_lightning.pipeline.runner import _expand_names
    from fer_lightning.pipeline.spec import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("""
data: {class_path: fer_lightning.data.JAFFEDataModule, init_args: {root: jaffe, split: loso}}
seed: 7
stages:
  a: {kind: train, foreach: {seed: [0, 1], data.init_args.fold: [0, 1, 2]}}
  h: {kind: handcrafted, foreach: {data.init_args.fold: [0, 1, 2]}}
  head: {kind: head, foreach: {seed: [0, 1], fold: [0, 1, 2]}, inputs: {features: [a.features, h.features]}}
  per_seed: {kind: report, foreach: {seed: [0, 1]}, inputs: {a: a.metrics}}
  r: {kind: report, inputs: {a: a.metrics, head: head.metrics}}
""")
    pipe = load_pipeline(p)
    copies = [n for n in pipe.stages if n.startswith("a@")]
    assert sorted(copies) == ["a@0@0", "a@0@1", "a@0@2", "a@1@0", "a@1@1", "a@1@2"]
    cfg = pipe.stages["a@1@2"].config
    assert cfg["seed_everything"] == 1 and cfg["data"]["init_args"]["fold"] == 2
    assert pipe.stages["a@0@1"].config["seed_everything"] == 0
    assert pipe.stages["h@2"].config["data"]["init_args"]["fold"] == 2
    assert pipe.stages["head@1@2"].inputs == {"features": ["a@1@2.features", "h@2.features"]}
    assert pipe.stages["head@1@2"].config["seed_everything"] == 1
    assert pipe.stages["per_seed@1"].inputs == {"a": ["a@1@0.metrics", "a@1@1.metrics", "a@1@2.metrics"]}
    assert pipe.stages["r"].inputs["a"] == [f"a@{s}@{f}.metrics" for s in (0, 1) for f in (0, 1, 2)]
    assert _expand_names(pipe, ["a@1"]) == ["a@1@0", "a@1@1", "a@1@2"]  # --only a@1: seed 1's folds
    text = p.read_text()
    p.write_text(text.replace("{seed: [0, 1], fold:", "{data.init_args.seed: [0, 1], seed: [0, 1], fold:"))
    with pytest.raises(UserError, match="'data.init_args.seed' and 'seed' are both dimension 'seed'"):
        load_pipeline(p)
    p.write_text(text.replace("fold: [0, 1, 2]}, inputs", "fold: [0, 1, 1]}, inputs"))
    with pytest.raises(UserError, match=r"stages.head.foreach.fold: a value is repeated in \[0, 1, 1\]"):
        load_pipeline(p)


def test_a_report_spreads_over_one_dimension_of_a_grid(tmp_path):
    # spread_over: seed -> each seed's mean over its other copies, then the std over seeds; a row
    # that does not loop over seed gets its mean alone; without it, the std is over every copy
    from fer_lightning.pipeline.runner import run_pipeline
    from fer_lightning.pipeline.spec import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("""
data: {class_path: fer_lightning.data.SyntheticFacesDataModule, init_args: {num_train: 60, num_val: 20}}
stages:
  h: {kind: handcrafted, params: {pca: 10}, foreach: {data.init_args.seed: [0, 1], data.init_args.num_test: [20, 40]}}
  p: {kind: probe, foreach: {seed: [0, 1], num_test: [20, 40]}, inputs: {features: {h: h.features}}}
  h1: {kind: handcrafted, params: {pca: 10}, foreach: {data.init_args.num_test: [20, 40]}}
  p1: {kind: probe, foreach: {num_test: [20, 40]}, inputs: {features: {h: h1.features}}}
  report:
    kind: report
    inputs: {p: p.metrics, p1: p1.metrics}
    params:
      spread_over: seed
      splits: [test]
      tables: [{title: t, columns: [acc], rows: [{label: grid, source: p/h/knn}, {label: folds, source: p1/h/knn}]}]
  report_all:
    kind: report
    inputs: {p: p.metrics}
    params: {splits: [test], tables: [{title: t, columns: [acc], rows: [{label: grid, source: p/h/knn}]}]}
""")
    run_pipeline(load_pipeline(p), tmp_path / "out", log=lambda *_: None)
    acc = {(s, n): json.loads((tmp_path / f"out/p@{s}@{n}/metrics.json").read_text())["h"]["knn"]["test"]["acc"]
           for s in (0, 1) for n in (20, 40)}
    seed_means = [(acc[s, 20] + acc[s, 40]) / 2 for s in (0, 1)]
    grid, folds = json.loads((tmp_path / "out/report/report.json").read_text())["tables"][0]["rows"]
    assert grid["ours"]["test"]["acc"] == pytest.approx(np.mean(seed_means))
    assert grid["ours"]["test"]["acc_std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert set(folds["ours"]["test"]) == {"acc"}   # no seed: no ±
    assert "standard deviation over seed of each seed's mean" in (tmp_path / "out/report/report.md").read_text()
    every = json.loads((tmp_path / "out/report_all/report.json").read_text())["tables"][0]["rows"][0]
    assert every["ours"]["test"]["acc_std"] == pytest.approx(np.std(list(acc.values()), ddof=1))
    p.write_text(p.read_text().replace("spread_over: seed", "spread_over: fold"))
    with pytest.raises(UserError, match=r"stages.report.params.spread_over: no input loops over 'fold' "
                                        r"\(they loop over: num_test, seed\)"):
        run_pipeline(load_pipeline(p), tmp_path / "out", log=lambda *_: None)


def test_a_bad_foreach_value_fails_the_check_before_anything_runs(tmp_path):
    # the runner checks one copy per new value, not every copy: a value first seen in the last
    # copy is still checked, before the first stage starts
    from fer_lightning.pipeline.runner import run_pipeline
    from fer_lightning.pipeline.spec import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("""
data: {class_path: fer_lightning.data.SyntheticFacesDataModule}
stages:
  a: {kind: train, config: %s, foreach: {seed: [0, 1, 2], data.init_args.num_train: [40, 60, many]}}
""" % (ROOT / "configs/models/cnn1.yaml"))
    with pytest.raises(UserError, match=r"stages.a@0@many: invalid config: .*num_train"):
        run_pipeline(load_pipeline(p), tmp_path / "out", dry_run=True, log=lambda *_: None)
    assert not (tmp_path / "out" / "a@0@40").exists()


def test_foreach_over_seeds(tmp_path):
    # `seed` sets each copy's seed_everything (what the top-level seed sets); a list of inputs takes
    # every copy in turn; on a kind without a seed (score fusion) `seed` only labels the copies
    from fer_lightning.pipeline.spec import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("""
data: {class_path: fer_lightning.data.SyntheticFacesDataModule}
seed: 7
stages:
  a: {kind: train, foreach: {seed: [0, 1]}}
  b: {kind: train}
  fused: {kind: score_fusion, inputs: {members: [a.probs, b.probs]}}
  per_seed: {kind: score_fusion, foreach: {seed: [0, 1]}, inputs: {members: [a.probs, b.probs]}}
""")
    pipe = load_pipeline(p)
    assert [pipe.stages[n].config["seed_everything"] for n in ("a@0", "a@1", "b")] == [0, 1, 7]
    assert pipe.stages["fused"].inputs == {"members": ["a@0.probs", "a@1.probs", "b.probs"]}
    assert pipe.stages["per_seed@1"].inputs == {"members": ["a@1.probs", "b.probs"]}
    assert "seed" not in pipe.stages["per_seed@1"].config
    p.write_text(p.read_text().replace("seed: [0, 1]}}\n  b:", "seed: [x, y]}}\n  b:"))
    with pytest.raises(UserError, match=r"stages.a.foreach.seed: 'x' is not a seed"):
        load_pipeline(p)
    p.write_text(p.read_text().replace("seed: [x, y]}}", "seed: [0, 1]}}").replace("seed: 7", "seed: -1"))
    with pytest.raises(UserError, match=r"seed: -1 is not a seed \(an integer from 0"):
        load_pipeline(p)  # numpy's range: an error here, not in every stage process


TINY_003 = """
base: {base}
name: tiny_hybrid
data:
  init_args: {{csv_path: {csv}, batch_size: 16, eval_batch_size: 64}}
trainer: {{max_epochs: 1, accelerator: cpu, enable_model_summary: false, limit_train_batches: 2}}
stages:
  effnet: {{params: {{model: {{net: {{init_args: {{input_size: 32, head: [32, 16]}}}}}}}}}}
  mobilenet: {{params: {{model: {{net: {{init_args: {{input_size: 32, head: [32, 16]}}}}}}}}}}
  hybrid_frozen: {{params: {{model: {{net: {{init_args: {{hidden: [16]}}}}}}}}}}
  hybrid_finetuned: {{params: {{model: {{net: {{init_args: {{hidden: [16]}}}}}}}}}}
  hybrid_trained: {{params: {{model: {{net: {{init_args: {{hidden: [16]}}}}}}}}}}
"""


def test_paper_003_pipeline_end_to_end_on_tiny_fer2013(tmp_path):
    """The real effnet_b0/mobilenet_v2 at 32×32, 1 epoch of 2 batches: every stage runs and the
    report holds the paper's five rows; hybrid (c) loads the two trained checkpoints."""
    rng = np.random.default_rng(0)
    rows = [(i % 7, rng.integers(0, 256, 48 * 48), u) for u, n in
            (("Training", 56), ("PublicTest", 14), ("PrivateTest", 14)) for i in range(n)]
    csv = write_fer_csv(tmp_path / "fer.csv", rows)
    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY_003.format(base=ROOT / "configs/pipelines/fer2013_hybrid.yaml", csv=csv))
    run_pipeline_cli(pipe, tmp_path / "out")
    report = json.loads((tmp_path / "out/report/report.json").read_text())
    rows = report["tables"][0]["rows"]
    assert [r["paper"]["acc"] for r in rows] == [73.32, 71.04, 58.63, 73.22, 74.39]
    assert all(r["ours"]["private_test"]["acc"] is not None for r in rows)
    cfg = (tmp_path / "out/hybrid_trained/config.yaml").read_text()
    assert "effnet/model.ckpt" in cfg and "mobilenet/model.ckpt" in cfg
    z = np.load(tmp_path / "out/effnet/features.npz")
    assert z["train_pooled"].shape[1] == 1280 and z["train_features"].shape[1] == 16


TINY_001 = """
base: {base}
name: tiny_jaffe
data:
  init_args: {{root: {root}, image_size: 48}}
trainer: {{max_epochs: 1, accelerator: cpu, enable_model_summary: false}}
stages:
  mobilenet:
    foreach: {{seed: {seeds}{data_folds}}}
    params: {{model: {{net: {{init_args: {{arch: mobilenet_v3_small, input_size: 48}}}}}}}}
  hog_lbp:
    {hog_folds}
    params: {{pca: 10}}
  hybrid: {{foreach: {{seed: {seeds}{folds}}}}}
  probe: {{foreach: {{seed: {seeds}{folds}}}}}
  {extra}
"""


@pytest.mark.skipif(not JAFFE.is_dir(), reason="../shared/data not present")
def test_paper_001_pipeline_on_real_jaffe_files(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY_001.format(base=ROOT / "configs/pipelines/jaffe_hybrid.yaml", root=JAFFE,
                                    seeds=[0, 1], data_folds="", hog_folds="", folds="", extra=""))  # 2 of 10 seeds
    run_pipeline_cli(pipe, tmp_path / "out")
    report = json.loads((tmp_path / "out/report/report.json").read_text())
    rows = report["tables"][0]["rows"]
    assert rows[0]["label"] == "MobileNetV2" and rows[-1]["label"].startswith("Proposed hybrid")
    # mean ± std over the two seeds; HOG/LBP has no seed and runs once
    assert ["acc_std" in r["ours"]["test"] for r in rows] == [True, False, False, True, True]
    hybrids = [json.loads((tmp_path / f"out/hybrid@{s}/metrics.json").read_text()) for s in (0, 1)]
    assert rows[-1]["ours"]["test"]["acc"] == pytest.approx(np.mean([h["test"]["acc"] for h in hybrids]))
    assert len(report["per_class"]["rows"][0]["ours"]) == 7
    assert hybrids[1]["test"]["n"] == 57 and hybrids[1]["train"]["n"] == 133 and hybrids[1]["val"]["n"] == 23
    cfg = (tmp_path / "out/hybrid@1/config.yaml").read_text()
    assert "in_features" in cfg and "pooled" in cfg and "mobilenet@1/features.npz" in cfg
    hand = json.loads((tmp_path / "out/hog_lbp/metrics.json").read_text())
    assert hand["raw_dim"] == 1390 and hand["dim"] == 10


@pytest.mark.skipif(not JAFFE.is_dir(), reason="../shared/data not present")
def test_paper_001_leave_one_subject_out_folds(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY_001.format(base=ROOT / "configs/pipelines/jaffe_hybrid_loso.yaml", root=JAFFE,
                                    seeds=[0, 1], data_folds=", data.init_args.fold: [0, 7]",
                                    hog_folds="foreach: {data.init_args.fold: [0, 7]}", folds=", fold: [0, 7]",
                                    extra="probe_hog_lbp: {foreach: {fold: [0, 7]}}"))
    out = run_pipeline_cli(pipe, tmp_path / "out")
    assert "mobilenet@1@7" in out and "hybrid@0@0" in out and "hog_lbp@7" in out
    acc = {(s, f): json.loads((tmp_path / f"out/hybrid@{s}@{f}/metrics.json").read_text())["test"]
           for s in (0, 1) for f in (0, 7)}
    assert acc[0, 0]["n"] + acc[0, 7]["n"] in range(40, 47)  # two subjects' ~21 images each
    rows = json.loads((tmp_path / "out/report/report.json").read_text())["tables"][0]["rows"]
    hybrid = rows[-1]["ours"]["test"]
    seed_means = [(acc[s, 0]["acc"] + acc[s, 7]["acc"]) / 2 for s in (0, 1)]  # spread_over: seed
    assert hybrid["acc"] == pytest.approx(np.mean(seed_means))
    assert hybrid["acc_std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert "acc_std" not in rows[1]["ours"]["test"]   # HOG/LBP: no seed, no ±


TINY_FROM_FER2013 = """
base: {base}
name: tiny_jaffe_from_fer2013
data:
  init_args: {{root: {root}}}
trainer: {{max_epochs: 1, accelerator: cpu, enable_model_summary: false}}
stages:
  fer2013:   # synthetic faces stand in for FER2013 here
    params:
      data: {{class_path: fer_lightning.data.SyntheticFacesDataModule,
              init_args: {{num_train: 140, num_val: 35, num_test: 35, batch_size: 35}}}}
  hog_lbp: {{params: {{pca: 10}}}}
  scratch: {{foreach: {{seed: [0, 1]}}}}    # two of the file's ten seeds
  finetune: {{foreach: {{seed: [0, 1]}}}}
  hybrid: {{foreach: {{seed: [0, 1]}}}}
  probe: {{foreach: {{seed: [0, 1]}}}}
"""


@pytest.mark.skipif(not JAFFE.is_dir(), reason="../shared/data not present")
def test_jaffe_fine_tuned_from_a_fer2013_start_on_real_jaffe_files(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY_FROM_FER2013.format(base=ROOT / "configs/pipelines/jaffe_from_fer2013.yaml", root=JAFFE))
    out = run_pipeline_cli(pipe, tmp_path / "out")
    assert "model.init_weights: 52 of 52 tensors from" in out   # the classifier too: 7 classes both
    finetune = (tmp_path / "out/finetune@1/config.yaml").read_text()
    assert "fer2013/model.ckpt" in finetune and "lr: 0.001" in finetune   # the measured fine-tuning rate
    assert "seed_everything: 1" in finetune
    assert "init_weights" not in (tmp_path / "out/scratch@0/config.yaml").read_text()
    assert "finetune@1/features.npz" in (tmp_path / "out/hybrid@1/config.yaml").read_text()
    for stage in ("scratch@0", "finetune@1", "hybrid@0"):
        m = json.loads((tmp_path / f"out/{stage}/metrics.json").read_text())
        assert m["test"]["n"] == 57 and m["train"]["n"] == 133
    rows = json.loads((tmp_path / "out/report/report.json").read_text())["tables"][0]["rows"]
    assert len(rows) == 6 and all(r["ours"]["test"]["acc"] is not None for r in rows)
    # mean ± std over the two seeds; HOG/LBP's SVM has no seed and runs once
    assert ["acc_std" in r["ours"]["test"] for r in rows] == [True, True, True, True, False, True]
