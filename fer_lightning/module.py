"""The one LightningModule every model plugs into: training logic only, no architecture."""

import os
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassConfusionMatrix,
                                         MulticlassF1Score, MulticlassPrecision, MulticlassRecall)

from fer_lightning.checkpoints import init_from_checkpoint, net_spec
from fer_lightning.errors import UserError
from fer_lightning.tta import check_tta, tta_probs


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def collate_predictions(outputs) -> dict:
    """``predict_step`` outputs of all batches → numpy ``probs``, ``features``, [``pooled``]
    (float32) and ``labels``."""
    return {k: torch.cat([o[k] for o in outputs]).cpu().numpy() if k == "labels"
            else torch.cat([o[k] for o in outputs]).float().cpu().numpy()
            for k in outputs[0]}


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy plus macro-averaged precision, recall and F1 (paper 000, eqs. 14–17)."""
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    })


def split_off_classifier(net: nn.Module, params) -> tuple[list, list]:
    """``params`` as (those of ``net.classifier``, the rest), for ``feature_lr_scale``."""
    head, params = {id(p) for p in net.classifier.parameters()}, list(params)
    return [p for p in params if id(p) in head], [p for p in params if id(p) not in head]


def default_optimizer(params):
    """The optimiser of a model config that names none."""
    return torch.optim.Adam(params, lr=1e-3)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of any ``net`` with ``features``/``classifier`` (see models/).

    Args:
        net: the model (``class_path``/``init_args`` in YAML).
        optimizer: optimiser factory (``class_path: torch.optim.SGD`` ...); ``None`` is the
            paper's Adam, lr 1e-3. Only parameters that
            require gradients are optimised (a FusionNet trains its head alone).
        scheduler: optional LR scheduler factory (``val/acc`` is its monitor); a
            ``CosineAnnealingLR`` with ``T_max: 0`` spans ``trainer.max_epochs``.
        label_smoothing: cross-entropy label smoothing.
        channels_last: NHWC memory layout for the conv layers (faster on CPU and tensor cores).
        mixup_alpha / cutmix_alpha: > 0 mixes pairs of training images (whole images: mixup;
            a pasted rectangle: cutmix) with a Beta(α, α) share, and their losses in that share;
            with both set, each batch uses one of the two at random.
        tta: test-time augmentation of the exported predictions (``fer_lightning.tta``):
            ``none``, ``flip`` (the face and its mirror), ``flip_crops`` (ten crops),
            ``flip_crops_rotate_zoom`` (eighteen views: those and the face turned ±8° and
            scaled by 0.92 / 1.08, mirrored), or another combination of those view sets.
        compile: run training and evaluation through ``torch.compile(net)`` (the checkpoint still
            holds the plain net's weights); a string is its ``mode``: ``reduce-overhead`` replays
            the network's kernels as CUDA graphs, for small nets whose GPU time is mostly kernel
            launches. bf16 autocast is the Trainer's ``precision: bf16-mixed``.
        ema_decay: > 0 keeps an exponential moving average of the weights (Lightning's
            ``EMAWeightAveraging``, updated after every step): validation, the saved checkpoints and
            so every exported prediction use the averaged weights. Its horizon is ~1 / (1 − decay)
            steps: 0.999 suits 100 epochs of 450 steps, 0.99 a 12-epoch run of 100.
        steps_per_execution: optimiser steps per Lightning training step (Keras's option of that
            name). With k > 1 the training loader hands over k batches at once and the module
            steps through them itself (Lightning's manual optimisation: forward, backward and
            optimiser step per batch; the scheduler where Lightning would step it), so the steps
            are those of k = 1 (tested) while Lightning's own per-step work — hooks, progress
            bookkeeping, the automatic-optimisation closure — happens once per k steps. For small
            networks on a GPU, where that work is a visible share of a step (docs/performance.md).
            Not with ``ema_decay`` (the average is updated once per Lightning step) nor with the
            Trainer's gradient clipping or accumulation (Lightning refuses them with manual
            optimisation). Trainer limits counted in batches (``limit_train_batches``, an integer
            ``val_check_interval``) count Lightning steps of k batches; ``max_steps`` counts
            optimiser steps but is checked once per Lightning step.
        init_weights: a trained model's checkpoint (a stage's ``model.ckpt`` or its folder) whose
            net, of the same class and ``init_args``, starts this training instead of a random
            initialisation: fine-tuning, e.g. a FER2013 net on JAFFE. Its classifier is kept when
            the number of classes is the same (every data module orders the classes alike). The
            path is not saved in this model's checkpoint, which holds the weights themselves.
        feature_lr_scale: the learning rate of everything but the net's last layer (``classifier``)
            is the optimiser's times this, under any scheduler — for fine-tuning, where a small
            scale keeps what the start learned while the classifier adapts. 0 freezes those
            weights (the classifier alone trains; batch-norm layers stay in training mode, so
            their running statistics follow the new data); 1, the default, trains all alike.
    """

    def __init__(self, net: nn.Module, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None, label_smoothing: float = 0.0,
                 channels_last: bool = True, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 tta: str = "none", compile: bool | str = False, ema_decay: float = 0.0,
                 steps_per_execution: int = 1, init_weights: str | None = None,
                 feature_lr_scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "init_weights"])
        if init_weights:  # on stdout, where a pipeline's log shows what a stage started from
            rank_zero_only(print)(init_from_checkpoint(net, init_weights), flush=True)
        # Enough to rebuild the net from the checkpoint alone (see checkpoints.load_net).
        self.hparams["net"] = net_spec(net)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.tta = check_tta(tta)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay: expected 0 (off) or a decay in (0, 1), got {ema_decay}")
        self.ema_decay = ema_decay
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise ValueError(f"model.steps_per_execution: expected a whole number of 1 or more, got {steps_per_execution}")
        if steps_per_execution > 1 and ema_decay > 0:
            raise ValueError("model.steps_per_execution > 1 and model.ema_decay do not combine: the weight average "
                             "is updated once per Lightning step; set one of them back to its default")
        self.steps_per_execution = steps_per_execution
        if not feature_lr_scale >= 0:
            raise ValueError(f"model.feature_lr_scale: expected 0 (frozen features) or more, got {feature_lr_scale}")
        self.feature_lr_scale = feature_lr_scale
        if feature_lr_scale == 0:  # no gradients for them: the backward pass stops at the classifier
            for p in split_off_classifier(net, net.parameters())[1]:
                p.requires_grad_(False)
        self.automatic_optimization = steps_per_execution == 1
        n = net.classifier.out_features
        self.val_metrics = classification_metrics(n).clone(prefix="val/")
        self.test_metrics = classification_metrics(n).clone(prefix="test/")
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.test_confusion_matrix = None  # rows = true class, after `trainer.test`
        self._said = float("-inf")  # when the last progress line was printed (_say_progress)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Not a registered submodule: the state dict keeps the plain net's keys.
        if isinstance(compile, str) and compile not in COMPILE_MODES:
            raise ValueError(f"model.compile: expected true, false or one of {', '.join(COMPILE_MODES)}, "
                             f"got '{compile}'")
        run_net = torch.compile(net, mode=compile if isinstance(compile, str) else None) if compile else net
        object.__setattr__(self, "_run_net", run_net)

    # Lightning sets `_current_fx_name` around every hook it calls (~40 times a training step) and
    # each step adds to the epoch's loss sums; nn.Module.__setattr__ looks through parameters,
    # buffers and submodules first (~1.3 µs a call here). These plain attributes skip that, which
    # changes nothing else: Module.__setattr__ ends in object.__setattr__ for them as well.
    _PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_loss_sum", "_loss_images"})

    def __setattr__(self, name, value):
        if name in self._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_callbacks(self):
        if self.ema_decay > 0:
            from lightning.pytorch.callbacks import EMAWeightAveraging

            return [EMAWeightAveraging(decay=self.ema_decay)]
        return []

    def forward(self, x):
        return self._run_net(self._layout(x))

    def _layout(self, x):
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def on_train_epoch_start(self):
        # Augmentation and dropout draw from the global RNG, which a checkpoint does not restore:
        # reseeding it from (seed, epoch) makes a resumed run identical to an uninterrupted one.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(seed * 1_000_003 + self.current_epoch + 1000 * self.global_rank)
        # The epoch's summed loss and image count, logged once at its end: a `self.log` on every
        # step is Lightning bookkeeping on every step (with the data module's direct batch move,
        # 0.35 ms of the framework's time per step: docs/performance.md), which counts when a
        # small CNN's whole GPU step is ~5 ms; the logged value is the same epoch mean.
        self._loss_sum, self._loss_images = torch.zeros((), device=self.device), 0
        self._epoch_started = time.perf_counter()

    def _mix(self, x, y):
        """Mixup / CutMix: the mixed batch, the partner labels and the share λ of the originals."""
        alphas = [a for a in (self.mixup_alpha, self.cutmix_alpha) if a > 0]
        if not alphas:
            return x, y, 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(y), device=y.device)
        if not use_cutmix:
            return lam * x + (1 - lam) * x[perm], y[perm], lam
        h, w = x.shape[-2:]
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        top, left = int(torch.randint(0, h - ch + 1, ())), int(torch.randint(0, w - cw + 1, ()))
        x = x.clone()
        x[..., top:top + ch, left:left + cw] = x[perm][..., top:top + ch, left:left + cw]
        return x, y[perm], 1 - ch * cw / (h * w)

    def training_step(self, batch, batch_idx):
        if self.steps_per_execution == 1:  # automatic optimisation
            return self._training_loss(batch, batch_idx)
        # steps_per_execution > 1: `batch` is a BatchGroup of batches (ChunkedBatches), a step each, in
        # the order Lightning's automatic optimisation takes: forward, zero_grad, backward, step.
        opt = self.optimizers()
        for i, one in enumerate(batch):
            loss = self._training_loss(one, batch_idx * self.steps_per_execution + i)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        # Lightning steps an epoch's scheduler after the epoch's last batch, before validation (and
        # so before the checkpoint that a resumed run starts from); a plateau one after validation.
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._step_scheduler(plateau=False)

    def _step_scheduler(self, plateau: bool):
        """Manual optimisation: step the scheduler, if any, where Lightning would — an epoch's after
        the epoch's last batch (``plateau=False``), a ``ReduceLROnPlateau`` on val/acc after validation."""
        scheduler = self.lr_schedulers()
        if scheduler is None or isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) != plateau:
            return
        if plateau:
            value = self.trainer.callback_metrics.get("val/acc")
            if value is None:
                raise UserError("model.scheduler: ReduceLROnPlateau watches val/acc, which this run does not "
                                "compute: give the data a validation split")
            scheduler.step(value)
        else:
            scheduler.step()

    def _training_loss(self, batch, batch_idx):
        x, y = batch
        x, y2, lam = self._mix(x, y)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y2, label_smoothing=self.label_smoothing)
        if batch_idx % 50 == 0 and not torch.isfinite(loss):  # a cheap, periodic sync
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"batch {batch_idx}: lower the learning rate or check the data")
        self._loss_sum += loss.detach() * len(y)
        self._loss_images += len(y)
        return loss

    def on_train_epoch_end(self):
        if not self._loss_images:
            return
        loss = self._loss_sum / self._loss_images
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} in epoch {self.current_epoch}: "
                                     f"lower the learning rate or check the data")
        if self.steps_per_execution > 1:
            # Not on a resumed run's replay of a finished epoch (no loss: returned above), where
            # Lightning skips plateau schedulers as well.
            self._step_scheduler(plateau=True)
        self._say_progress(loss)

    def _say_progress(self, loss):
        """``epoch 3/40: train loss 1.2345, val acc 55.21 % (41 s)`` where no progress bar shows it
        (pipelines turn the bar off to keep logs readable; the runner relays these lines from stages
        in their own processes): at most one every 10 s, and always the last epoch's."""
        t, now = self.trainer, time.perf_counter()
        last = t.max_epochs is not None and self.current_epoch + 1 >= t.max_epochs
        if t.progress_bar_callback is not None or not t.is_global_zero or (now - self._said < 10 and not last):
            return
        self._said = now
        acc = t.callback_metrics.get("val/acc")
        total = f"/{t.max_epochs}" if t.max_epochs and t.max_epochs > 0 else ""
        print(f"epoch {self.current_epoch + 1}{total}: train loss {loss.item():.4f}"
              + (f", val acc {100 * float(acc):.2f} %" if acc is not None else "")
              + f" ({now - self._epoch_started:.0f} s)", flush=True)

    def _eval_step(self, batch, metrics, prefix):
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), prog_bar=True, batch_size=len(y),
                 sync_dist=True)
        metrics.update(logits, y)
        self.log_dict(metrics, prog_bar=prefix == "val", batch_size=len(y))
        return logits

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        logits = self._eval_step(batch, self.test_metrics, "test")
        self.test_confusion.update(logits, batch[1])

    def on_test_epoch_end(self):
        cm = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        self.test_confusion_matrix = cm.tolist()
        if self.trainer.is_global_zero:
            from fer_lightning import CLASS_NAMES

            names = CLASS_NAMES if len(CLASS_NAMES) == len(cm) else [str(i) for i in range(len(cm))]
            width = max(len(c) for c in names)
            print("confusion matrix (rows: true class, columns: predicted)")
            print(" " * (width + 1) + " ".join(f"{c[:7]:>7}" for c in names))
            for name, row in zip(names, cm.tolist()):
                print(f"{name:>{width}} " + " ".join(f"{v:>7}" for v in row))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        x, extra = self._layout(x), {}
        if hasattr(self.net, "pooled"):  # torchvision backbones: their pooled features too
            extra["pooled"] = self.net.pooled(x)
            feats = self.net.head(extra["pooled"])
        else:
            feats = self.net.features(x)
        probs = tta_probs(self.net, x, self.tta, self.net.classifier(feats).softmax(-1))
        return {"probs": probs, "features": feats, "labels": y, **extra}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        scaled = self.feature_lr_scale not in (0, 1)  # (0: the rest has no gradients, see __init__)
        if scaled:
            head, rest = split_off_classifier(self.net, params)
            params = [{"params": head}, {"params": rest}]
        opt = self.optimizer_factory(params) if self.optimizer_factory else default_optimizer(params)
        if scaled:  # before the scheduler, which starts from these rates
            opt.param_groups[1]["lr"] *= self.feature_lr_scale
        if self.scheduler_factory is None:
            return opt
        scheduler = self.scheduler_factory(opt)
        # A cosine schedule with T_max 0 spans the whole run, so that `--set trainer.max_epochs=N`
        # still anneals to 0 (a fixed T_max of 100 in a 40-epoch run stops at 65 % of the lr).
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max <= 0:
            epochs = self.trainer.max_epochs
            if not epochs or epochs < 1:
                raise UserError("model.scheduler: CosineAnnealingLR with T_max 0 spans trainer.max_epochs, "
                                "which is not set: set trainer.max_epochs or a positive T_max")
            scheduler.T_max = epochs
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/acc"}}
