from pathlib import Path

import pytest
import torch
from torch import nn

from fer_lightning.models import CNN1, CNN2, CNN3, FusionNet
from fer_lightning.module import ClassifierModule


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def _sequence(model):
    """Layer type names of the feature extractor, in order."""
    return [type(m).__name__ for m in model.features]


def test_output_and_feature_shapes():
    x = torch.randn(4, 1, 48, 48)
    for cls, dim in ((CNN1, 64), (CNN2, 128), (CNN3, 256)):
        net = cls().eval()
        assert net(x).shape == (4, 7)
        assert net.features(x).shape == (4, dim) and net.feature_dim == dim


def test_layer_counts_match_the_paper():
    # CNN1: 5 conv + 4 fc; CNN2: 4 conv + 3 fc; CNN3: 6 conv + 2 fc (paper 000, Fig. 1)
    for cls, convs, fcs in ((CNN1, 5, 4), (CNN2, 4, 3), (CNN3, 6, 2)):
        net = cls()
        assert len(_layers(net, nn.Conv2d)) == convs
        assert len(_layers(net, nn.Linear)) == fcs


def test_cnn1_and_cnn2_conv_blocks_are_bn_relu_pool_dropout():
    for cls in (CNN1, CNN2):
        seq = _sequence(cls())
        for i, name in enumerate(seq):
            if name == "Conv2d":
                assert seq[i + 1:i + 5] == ["BatchNorm2d", "ReLU", "MaxPool2d", "Dropout"]
            if name == "Linear":  # hidden fc layers: BN, ReLU, dropout
                assert seq[i + 1:i + 4] == ["BatchNorm1d", "ReLU", "Dropout"]


def test_cnn3_pools_after_conv_2_3_4_6_and_fc1_has_relu_only():
    seq = _sequence(CNN3())
    conv_idx = [i for i, n in enumerate(seq) if n == "Conv2d"]
    pooled = [seq[i + 3] == "MaxPool2d" if i + 3 < len(seq) else False for i in conv_idx]
    assert pooled == [False, True, True, True, False, True]
    assert all(seq[i + 1:i + 3] == ["BatchNorm2d", "ReLU"] for i in conv_idx)
    assert seq[-2:] == ["Linear", "ReLU"]


def test_fusion_net_freezes_backbones_and_trains_only_the_head(tmp_path):
    import lightning as L

    paths = []
    for cls in (CNN1, CNN2):
        module = ClassifierModule(cls())
        trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(module)
        p = tmp_path / f"{cls.__name__}.ckpt"
        trainer.save_checkpoint(p)
        paths.append(str(p))
    fusion = FusionNet(paths)
    assert fusion.feature_dim == 64 + 128
    trainable = [n for n, p in fusion.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    fusion.train()
    assert all(not m.training for b in fusion.backbones for m in b.modules())
    x = torch.randn(3, 1, 48, 48)
    assert fusion(x).shape == (3, 7)
    # the backbones are the trained ones: same features as the checkpointed net
    from fer_lightning.checkpoints import load_net

    b1 = load_net(paths[0])
    assert torch.allclose(fusion.backbones[0].features(x), b1.features(x), atol=1e-6)


def test_fusion_checkpoint_is_self_contained(tmp_path):
    """A trained FusionNet reloads without its backbones' checkpoint files."""
    import lightning as L

    from fer_lightning.checkpoints import load_net

    paths = []
    for cls in (CNN1, CNN2):
        trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(ClassifierModule(cls()))
        paths.append(tmp_path / f"{cls.__name__}.ckpt")
        trainer.save_checkpoint(paths[-1])
    fusion = ClassifierModule(FusionNet([str(p) for p in paths]))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(fusion)
    trainer.save_checkpoint(tmp_path / "fusion.ckpt")
    for p in paths:
        p.unlink()
    reloaded = load_net(tmp_path / "fusion.ckpt")
    x = torch.randn(2, 1, 48, 48)
    fusion.net.eval()
    # the same weights; two copies of a net may sum a convolution in a different order, so the
    # last bits may differ (seen once under `pytest -n 2` with allclose's default atol of 1e-8)
    torch.testing.assert_close(reloaded(x), fusion.net(x), rtol=1e-4, atol=1e-6)
    assert "checkpoints" not in str(torch.load(tmp_path / "fusion.ckpt", weights_only=False)["hyper_parameters"])


def test_compile_modes_are_checked_when_the_module_is_built():
    ClassifierModule(CNN2(), compile="reduce-overhead")  # compiles lazily: nothing runs here
    with pytest.raises(ValueError, match="model.compile: .*reduce-overhead"):
        ClassifierModule(CNN2(), compile="fast")


def test_logged_training_loss_is_the_epoch_mean_over_images():
    # The module sums the loss itself and logs once per epoch (cheaper than a self.log per step):
    # the value must be the image-weighted mean of the steps' losses, as Lightning's was.
    import lightning as L

    from fer_lightning.data import SyntheticFacesDataModule

    class Steps(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append((float(outputs["loss"]), len(batch[1])))

    dm = SyntheticFacesDataModule(num_train=40, num_val=8, num_test=8, batch_size=16)  # batches 16, 16, 8
    steps = Steps()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    trainer.fit(ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8])), datamodule=dm)
    last = steps.seen[3:]  # the second epoch's three steps
    assert [n for _, n in last] == [16, 16, 8]
    expected = sum(loss * n for loss, n in last) / 40
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(expected, rel=1e-5)


def test_setattr_fast_path_registers_nothing_and_leaves_modules_alone():
    # ClassifierModule sets Lightning's per-hook name and its loss sums without nn.Module's
    # lookups: they must stay plain attributes, and every other assignment must still register.
    module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]))
    keys = set(module.state_dict())
    module._loss_sum, module._current_fx_name = torch.zeros(()), "training_step"
    assert set(module.state_dict()) == keys and module._current_fx_name == "training_step"
    module.extra = nn.Linear(2, 2)
    assert "extra.weight" in module.state_dict()


def test_vggnet_is_four_stages_of_two_convs_then_three_fc_and_rebuilds_from_its_checkpoint(tmp_path):
    import lightning as L

    from fer_lightning.checkpoints import load_net
    from fer_lightning.models import VGGNet

    net = VGGNet().eval()
    assert len(_layers(net, nn.Conv2d)) == 8 and len(_layers(net, nn.MaxPool2d)) == 4
    assert [m.out_features for m in _layers(net, nn.Linear)] == [4096, 4096, 7]
    assert net.features[-6].in_features == 512 * 3 * 3       # 48 → 3 after four pools
    assert 40e6 < sum(p.numel() for p in net.parameters()) < 41e6
    small = VGGNet(widths=(4, 8, 8, 8), fc=(16, 8), image_size=40)
    x = torch.randn(3, 1, 40, 40)
    assert small(x).shape == (3, 7) and small.features(x).shape == (3, 8) and small.feature_dim == 8
    module = ClassifierModule(small)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "vgg.ckpt")
    small.eval()
    assert torch.allclose(load_net(tmp_path / "vgg.ckpt")(x), small(x), atol=1e-6)


def test_resnet_is_torchvisions_with_a_small_stem():
    from fer_lightning.errors import UserError
    from fer_lightning.models import ResNet

    net = ResNet("resnet18").eval()
    convs = _layers(net, nn.Conv2d)
    assert (convs[0].in_channels, convs[0].kernel_size, convs[0].stride) == (1, (3, 3), (1, 1))
    assert len(convs) == 20 and 11.1e6 < sum(p.numel() for p in net.parameters()) < 11.3e6  # 17 + 3 shortcuts
    x = torch.randn(2, 1, 48, 48)
    assert net(x).shape == (2, 7) and net.features(x).shape == (2, 512) and net.feature_dim == 512
    # the stages see 24, 12, 6, 3 pixels with the stem's pool, twice that without
    assert net.features[:8](x).shape[-1] == 3 and ResNet(stem_pool=False).features[:8](x).shape[-1] == 6
    with pytest.raises(UserError, match="arch: 'resnet50' is not supported"):
        ResNet("resnet50")


def test_narrow_resnet_keeps_torchvisions_blocks_at_the_given_widths(tmp_path):
    import lightning as L

    from fer_lightning.checkpoints import load_net
    from fer_lightning.config import instantiate, load_yaml
    from fer_lightning.errors import UserError
    from fer_lightning.models import ResNet

    spec = load_yaml(Path(__file__).parents[1] / "configs/models/resnet_small.yaml")["model"]["net"]
    net = instantiate(spec, "model.net")  # the CPU-budget ResNet's config, as a pipeline builds it
    convs = _layers(net, nn.Conv2d)
    assert len(convs) == 20 and [c.out_channels for c in convs[:1] + convs[-3:]] == [16, 128, 128, 128]
    assert 0.69e6 < sum(p.numel() for p in net.parameters()) < 0.71e6
    x = torch.randn(2, 1, 48, 48)
    assert net(x).shape == (2, 7) and net.features(x).shape == (2, 128) and net.feature_dim == 128
    assert len(_layers(ResNet("resnet34", widths=(8, 8, 8, 8)), nn.Conv2d)) == 36  # 33 + 3 shortcuts
    # torchvision's initialisation (He, fan-out), not PyTorch's default, in the rebuilt stages
    assert convs[-1].weight.std() > 1.5 * nn.Conv2d(128, 128, 3).weight.std()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(ClassifierModule(net))
    trainer.save_checkpoint(tmp_path / "resnet.ckpt")
    # the same weights; the two nets' convolutions may take different kernels (float noise ~1e-6)
    assert torch.allclose(load_net(tmp_path / "resnet.ckpt").eval()(x), net.eval()(x), atol=1e-5)
    with pytest.raises(UserError, match="widths: a ResNet has 4 stages"):
        ResNet(widths=(16, 32, 64))


def test_cosine_schedule_with_t_max_0_anneals_over_max_epochs():
    import lightning as L

    from fer_lightning.data import SyntheticFacesDataModule
    from fer_lightning.errors import UserError

    def cosine(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=0)

    dm = SyntheticFacesDataModule(num_train=16, num_val=8, num_test=8, batch_size=16)
    module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]), scheduler=cosine,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.T_max == 4 and trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]), scheduler=cosine)
    trainer = L.Trainer(max_epochs=-1, max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(UserError, match="T_max 0 spans trainer.max_epochs"):
        trainer.fit(module, datamodule=dm)


@pytest.mark.parametrize("val_every_epoch", [True, False])
def test_last_checkpoint_is_the_latest_epoch_when_the_best_is_older(tmp_path, val_every_epoch):
    # Lightning 2.6 writes save_last's last.ckpt only beside a new best: with a best that stays
    # epoch 0's ("epoch", mode min) it would stay epoch 0's too, and a resume would repeat epochs.
    # Saved at the training epoch's end when validation runs every epoch, else at validation's end.
    import lightning as L

    from fer_lightning.callbacks import ResumableCheckpoint
    from fer_lightning.data import SyntheticFacesDataModule

    dm = SyntheticFacesDataModule(num_train=32, num_val=16, num_test=16, batch_size=16)
    ckpt = ResumableCheckpoint(tmp_path, filename="best", monitor="epoch", mode="min", save_last=True)
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[ckpt],
                        check_val_every_n_epoch=1 if val_every_epoch else 2)
    assert ckpt._should_save_on_train_epoch_end(trainer) is val_every_epoch
    trainer.fit(ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8])), datamodule=dm)
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == (0 if val_every_epoch else 1)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["epoch"] == 3 and last["global_step"] == trainer.global_step == 8


def test_ema_weights_are_validated_checkpointed_and_resumed(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer_lightning.data import SyntheticFacesDataModule

    def fit(epochs, root, ckpt_path=None):
        L.seed_everything(0)
        dm = SyntheticFacesDataModule(num_train=64, num_val=16, num_test=16, batch_size=16)
        module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]), ema_decay=0.9)
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[ModelCheckpoint(root, save_last=True)])
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module

    module = fit(2, tmp_path / "a")
    last = torch.load(tmp_path / "a" / "last.ckpt", weights_only=False)
    raw, avg = last["current_model_state"], last["state_dict"]   # the raw weights ride along
    assert any(not torch.equal(raw[k], avg[k]) for k in avg if k.startswith("net."))
    for k, v in module.state_dict().items():   # after fit the module holds the average: what is exported
        torch.testing.assert_close(v, avg[k])
    fit(1, tmp_path / "b")
    resumed = fit(2, tmp_path / "b", ckpt_path=tmp_path / "b" / "last.ckpt")
    for k, v in module.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)
    with pytest.raises(ValueError, match="model.ema_decay"):
        ClassifierModule(CNN2(), ema_decay=1.0)


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_several_steps_per_execution_train_the_same_weights_and_resume(tmp_path, scheduler):
    # steps_per_execution=3 hands the module 3 batches per Lightning step and it steps through
    # them itself (manual optimisation): with augmentation, dropout, mixup, SGD momentum and either
    # kind of scheduler, the weights, steps, logged loss and learning rate are those of one batch
    # per step; a run resumed from an epoch's last.ckpt ends as the uninterrupted one.
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer_lightning.data import SyntheticFacesDataModule

    def make_scheduler(opt):
        if scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)  # not 0: the 1-epoch run resumes
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, threshold=0.5)

    def fit(k, epochs, root=None, ckpt_path=None):
        L.seed_everything(0)
        dm = SyntheticFacesDataModule(num_train=72, num_val=16, num_test=16, batch_size=16)  # 5 batches: 16 … 8
        module = ClassifierModule(CNN2(widths=[4, 4, 8, 8], fc=[8]), mixup_alpha=0.4, steps_per_execution=k,
                                  optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                                  scheduler=make_scheduler)
        callbacks = [ModelCheckpoint(root, save_last=True)] if root else []
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=bool(root), callbacks=callbacks)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module, trainer

    one, t1 = fit(1, 3)
    three, t3 = fit(3, 3)
    assert not three.automatic_optimization and t3.num_training_batches == 2   # groups of 3 and 2 batches
    assert t3.global_step == t1.global_step == 15
    lrs = [t.optimizers[0].param_groups[0]["lr"] for t in (t1, t3)]
    assert lrs[0] == lrs[1] and lrs[0] < 0.05     # the scheduler stepped, as often
    assert float(t3.callback_metrics["train/loss"]) == float(t1.callback_metrics["train/loss"])
    for (name, a), b in zip(one.state_dict().items(), three.state_dict().values()):
        assert torch.equal(a, b), name
    fit(3, 1, tmp_path)
    resumed, _ = fit(3, 3, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    for (name, a), b in zip(three.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="steps_per_execution"):
        ClassifierModule(CNN2(), steps_per_execution=2, ema_decay=0.9)
