"""Fine-tuning: a train stage starts from another stage's trained net (``inputs: {init: ...}``,
i.e. ``model.init_weights``), as configs/pipelines/jaffe_from_fer2013.yaml does FER2013 → JAFFE."""

import pytest
import torch

from fer_lightning.checkpoints import init_from_checkpoint, net_spec
from fer_lightning.errors import UserError
from fer_lightning.models import CNN2, VGGNet
from fer_lightning.pipeline.runner import run_pipeline
from fer_lightning.pipeline.spec import load_pipeline

from conftest import ROOT

PIPELINE = """
name: finetune
seed: 0
data:
  class_path: fer_lightning.data.SyntheticFacesDataModule
  init_args: {{num_train: 70, num_val: 35, num_test: 35, batch_size: 35}}
trainer: {{max_epochs: 1, enable_model_summary: false, enable_progress_bar: false}}
stages:
  source:
    kind: train
    config: {vgg}
    params: {{model: {{net: {{init_args: {{widths: [4, 8], fc: [8]}}}}}}}}
  tuned:
    kind: train
    config: {vgg}
    # learning rate 0: the tuned net's parameters stay exactly where they started
    params: {{model: {{net: {{init_args: {{widths: [4, 8], fc: [8]}}}},
                       optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 0.0}}}}}}}}
    inputs: {{init: source.checkpoint}}
  head_only:
    kind: train
    config: {vgg}
    # frozen features: only the classifier moves, at a learning rate that surely moves it
    params: {{model: {{net: {{init_args: {{widths: [4, 8], fc: [8]}}}}, feature_lr_scale: 0,
                       optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 0.5}}}}}}}}
    inputs: {{init: source.checkpoint}}
"""


def _params(ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    net = VGGNet(widths=[4, 8], fc=[8])
    names = [f"net.{n}" for n, _ in net.named_parameters()]
    return {n: state[n] for n in names}


def test_a_train_stage_starts_from_another_stages_net(tmp_path):
    path = tmp_path / "finetune.yaml"
    path.write_text(PIPELINE.format(vgg=ROOT / "configs" / "models" / "vgg_small.yaml"))
    out = tmp_path / "out"
    run_pipeline(load_pipeline(path), out, log=lambda *_: None)
    source, tuned = _params(out / "source" / "model.ckpt"), _params(out / "tuned" / "model.ckpt")
    assert all(torch.equal(source[n], tuned[n]) for n in source)   # classifier included: 7 classes both
    fresh = VGGNet(widths=[4, 8], fc=[8])
    assert not torch.equal(fresh.features[0].weight, source["net.features.0.weight"])
    # the saved checkpoint holds weights, not the path it started from
    hparams = torch.load(out / "tuned" / "model.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert "init_weights" not in hparams
    head_only = _params(out / "head_only" / "model.ckpt")
    changed = {n for n in source if not torch.equal(source[n], head_only[n])}
    assert changed == {"net.classifier.weight", "net.classifier.bias"}

    # another architecture cannot start from it: one line naming the key and the first tensor
    with pytest.raises(UserError, match=r"^model.init_weights: .*model.ckpt does not fit this VGGNet: "
                                        r"features.0.weight has shape \(6, 1, 3, 3\) here, shape \(4, 1, 3, 3\)"):
        run_pipeline(load_pipeline(path, sets=["stages.tuned.params.model.net.init_args.widths=[6, 8]"]),
                     out, log=lambda *_: None)
    assert not (out / "tuned" / "manifest.json").exists()


def _saved(net, path):
    torch.save({"hyper_parameters": {"net": net_spec(net)},
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def test_a_new_classifier_where_the_classes_differ_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    five = _saved(CNN2(num_classes=5, widths=[4, 8, 8, 8], fc=[16, 8]), tmp_path / "five.ckpt")
    net = CNN2(widths=[4, 8, 8, 8], fc=[16, 8])
    before = net.classifier.weight.clone()
    said = init_from_checkpoint(net, five)
    assert said.endswith("; a new classifier (classifier.weight, classifier.bias)") and " of " in said
    assert torch.equal(net.classifier.weight, before)                  # 7 classes here: kept fresh
    source = torch.load(five, weights_only=False)["state_dict"]
    assert torch.equal(net.features[0].weight, source["net.features.0.weight"])
    with pytest.raises(UserError, match=r"holds a CNN2, this model is a VGGNet"):
        init_from_checkpoint(VGGNet(widths=[4, 8], fc=[8]), five)
    with pytest.raises(UserError, match=r"^model.init_weights: .*missing.ckpt: checkpoint not found"):
        init_from_checkpoint(net, tmp_path / "missing.ckpt")


def test_feature_lr_scale_slows_all_but_the_classifier_under_a_scheduler():
    from fer_lightning.module import ClassifierModule

    module = ClassifierModule(CNN2(widths=[4, 8, 8, 8], fc=[16, 8]), feature_lr_scale=0.25,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                              scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5))
    setup = module.configure_optimizers()
    opt, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    head, rest = opt.param_groups
    assert head["params"] == list(module.net.classifier.parameters())
    assert len(head["params"]) + len(rest["params"]) == len(list(module.parameters()))
    assert (head["lr"], rest["lr"]) == pytest.approx((0.1, 0.025))
    opt.step()   # (no gradients: changes nothing; the order schedulers expect)
    scheduler.step()
    assert (head["lr"], rest["lr"]) == pytest.approx((0.05, 0.0125))
    with pytest.raises(ValueError, match=r"^model.feature_lr_scale: expected 0 \(frozen features\) or more, got -1"):
        ClassifierModule(CNN2(widths=[4, 8, 8, 8], fc=[16, 8]), feature_lr_scale=-1)
