"""The in-memory tensor DataModule every dataset builds on.

A dataset of 48×48 grey faces is small (FER2013 is 83 MB as uint8), so each split is held as one
uint8 tensor. Batches are index slices of it, built by a batch sampler, with no per-sample work.
Training batches are converted to float, augmented and normalised on the device, several batches
at a time (`ChunkedBatches`); evaluation batches are normalised after they reach their device
(`on_after_batch_transfer`).
"""

import functools
import itertools
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from fer_lightning import CLASS_NAMES, MEAN, STD
from fer_lightning.artifacts import load_npz
from fer_lightning.data.augment import BatchAugment
from fer_lightning.errors import UserError


# -MEAN / STD as a 0-d CPU tensor: kernels on any device take it as a scalar.
_NORM_BIAS = torch.tensor(-MEAN / STD)


def normalise(x: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """``(x / max_value - MEAN) / STD`` as float32, in one multiply-add kernel (``x`` uint8 or
    float). On a GPU a 48×48 batch's loader is bound by kernel launches, not arithmetic
    (docs/performance.md): the conversion, scaling, subtraction and division were four of them."""
    return torch.add(_NORM_BIAS, x, alpha=1.0 / (max_value * STD))


def model_input(x: torch.Tensor, augment: BatchAugment | None = None) -> torch.Tensor:
    """A uint8 batch ``[N, 1, H, W]`` as the network's normalised float input, augmented (on
    values in [0, 1]) when ``augment`` is given."""
    if augment is None:
        return normalise(x, 255.0)
    return normalise(augment(x * (1.0 / 255.0)))  # uint8 * float: one kernel, float32 out


class _IndexedTensors(Dataset):
    """``ds[list_of_indices]`` returns a whole batch by tensor indexing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, device=self.images.device)
        return self.images[idx], self.labels[idx]


class OrderedBatches(Sampler):
    """Batches of indices in order (evaluation). With ``device`` they are made there: copying each
    batch's indices from the host instead is a blocking copy, which waits for the GPU to finish
    every queued step and so stops the CPU from running ahead of it."""

    def __init__(self, n: int, batch_size: int, device: torch.device | None = None):
        self.n, self.batch_size, self.device = n, batch_size, device

    def __iter__(self):
        yield from torch.arange(self.n, device=self.device).split(self.batch_size)

    def __len__(self):
        return -(-self.n // self.batch_size)


class ShuffledBatches(OrderedBatches):
    """Shuffled batches of indices whose order depends only on (seed, epoch): a run resumed from a
    checkpoint sees exactly the batches an uninterrupted run would. Lightning calls set_epoch.
    The order is drawn on the CPU (so it is the same on every device) and moved to ``device`` once
    per epoch.

    With ``world`` > 1 (DDP) process ``rank`` takes every ``world``-th batch, and the first batches
    are repeated so that every process gets as many (what Lightning's ``DistributedSampler`` does).
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | None = None,
                 rank: int = 0, world: int = 1):
        super().__init__(n, batch_size, device)
        self.seed, self.epoch, self.rank, self.world = seed, 0, rank, world

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = torch.randperm(self.n, generator=gen).to(self.device).split(self.batch_size)
        if self.world > 1:
            batches = (batches * self.world)[: len(self) * self.world][self.rank::self.world]
        yield from batches

    def __len__(self):
        return -(-super().__len__() // self.world)


# On a GPU, training batches are made ready this many bytes (of float input) at a time: see ChunkedBatches.
CHUNK_BYTES = 16 << 20


def gpu_chunk(batch_size: int, image_numel: int) -> int:
    """Batches per chunk on a GPU: ``CHUNK_BYTES`` of float input, at least one batch."""
    return max(1, CHUNK_BYTES // (batch_size * image_numel * 4))


class BatchGroup(list):
    """The ``(images, labels)`` batches of one Lightning training step (``steps_per_execution``)."""


class ChunkedBatches:
    """The training loader: the ``sampler``'s batches of ``images`` made ready for the model by
    ``prepare`` (augmentation, normalisation) ``chunk`` batches at a time, then yielded one by one.

    On a GPU a 48×48 batch's augmentation is bound by kernel launches, not arithmetic
    (docs/performance.md): preparing a chunk of batches with one set of launches divides that
    cost by the chunk's length, and a batch is then a slice of the chunk (a view: no kernel). By
    default a chunk holds ``CHUNK_BYTES`` of float input there (7 batches of 256 FER2013 faces, 28
    of 64; one batch of 32 RGB 224×224 images), and one batch on the CPU, which has no launches to
    save and works on a batch while it is in its cache. The augmentation draws each image's parameters
    in epoch order either way, so the batches are those that preparing them one at a time gives
    (tested).

    With ``group`` > 1 it yields a ``BatchGroup`` of that many batches instead, one per Lightning
    training step (the module's ``steps_per_execution``).

    Lightning calls ``set_epoch`` on the ``sampler`` attribute, as for a ``DataLoader``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, sampler: ShuffledBatches, prepare,
                 chunk: int | None = None, group: int = 1):
        self.images, self.targets, self.sampler, self.prepare = images, targets, sampler, prepare
        if chunk is None:
            chunk = 1 if images.device.type == "cpu" else gpu_chunk(sampler.batch_size, images[0].numel())
        self.chunk, self.group = max(1, chunk), max(1, group)

    def __len__(self):
        return -(-len(self.sampler) // self.group)

    def __iter__(self):
        batches = self._batches()
        if self.group == 1:
            yield from batches
            return
        while group := BatchGroup(itertools.islice(batches, self.group)):
            yield group

    def _batches(self):
        batches = iter(self.sampler)
        while chunk := list(itertools.islice(batches, self.chunk)):
            idx = torch.cat(chunk) if len(chunk) > 1 else chunk[0]
            sizes = [len(b) for b in chunk]
            yield from zip(self.prepare(self.images[idx]).split(sizes), self.targets[idx].split(sizes))


class TensorDataModule(L.LightningDataModule):
    """Base class: subclasses implement :meth:`load_splits`.

    Args:
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and prediction.
        augment: batch augmentation for training; ``None`` turns it off.
        seed: seed of the training-order shuffle and of any split this module makes.
        teacher_probs: knowledge distillation: a trained model's or ensemble's ``probs.npz`` (see
            :func:`read_teacher`); the training targets become ``teacher_weight`` × the teacher's
            probabilities + (1 − ``teacher_weight``) × the labels (one-hot, or a subclass's soft
            labels such as FER+'s votes). Validation and test are scored against the labels.
        teacher_weight: the teacher's share of the training target, in [0, 1].
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    # The split names reported on; subclasses may add more (FER2013: public_test, private_test).
    eval_splits = ("train", "val", "test")

    def __init__(self, batch_size: int = 256, eval_batch_size: int = 1024,
                 augment: BatchAugment | None = None, seed: int = 0, teacher_probs: str | None = None,
                 teacher_weight: float = 0.5):
        super().__init__()
        check_count("batch_size", batch_size)
        check_count("eval_batch_size", eval_batch_size)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self.seed = seed
        if not 0.0 <= teacher_weight <= 1.0:
            raise UserError(f"data.teacher_weight: {teacher_weight} must lie in [0, 1]")
        self.teacher_probs, self.teacher_weight = teacher_probs, teacher_weight
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.train_targets = None  # soft training targets: a subclass's (FER+ votes) and/or a teacher's
        self.predict_split = "test"

    # -- to implement ---------------------------------------------------------------------
    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Return ``{split: (uint8 images [N, 1, H, W], int64 labels [N])}`` with at least
        ``train``, ``val`` and ``test``."""
        raise NotImplementedError

    def checked_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = self.load_splits()
        for name in ("train", "val", "test"):
            if name not in splits or len(splits[name][1]) == 0:
                raise UserError(f"{type(self).__name__}: split '{name}' has no rows")
        return splits

    # -- Lightning hooks ------------------------------------------------------------------
    def prepare_data(self):
        """Read and check the splits; ``setup`` in the same process keeps them (in DDP only one
        process per node runs this: the others read in ``setup``). The pipeline runner calls it
        once per data config before any stage starts, so a bad file or folder is one error before
        anything trains, and FER2013's CSV is parsed into its cache once, not by every stage
        started side by side."""
        if not self.splits:
            self._prepared = self.checked_splits()

    def setup(self, stage: str | None = None):
        if self.splits:
            return
        splits = self.__dict__.pop("_prepared", None) or self.checked_splits()
        if self.teacher_probs:
            labels = splits["train"][1]
            teacher = read_teacher(self.teacher_probs, labels, self.num_classes)
            own = (self.train_targets if self.train_targets is not None
                   else F.one_hot(labels, self.num_classes).float())
            self.train_targets = self.teacher_weight * teacher + (1 - self.teacher_weight) * own
        self.splits = splits

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup()
        if name not in self.splits:
            raise UserError(f"unknown split '{name}'; this dataset has {sorted(self.splits)}")
        return self.splits[name]

    def _loader(self, name: str, train: bool) -> DataLoader:
        return self.loader(*self.split(name), train=train)

    def loader(self, images: torch.Tensor, labels: torch.Tensor, train: bool) -> DataLoader | ChunkedBatches:
        """Batches of ``(images, labels)``: shuffled training batches, ready for the model
        (:meth:`batch_input`), or sequential ones. When training on a GPU the whole split moves
        there once, so batches are sliced on the device."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        if device is not None and device.type == "cuda":
            images, labels = images.to(device), labels.to(device)
        else:
            device = None
        if train:
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            sampler = ShuffledBatches(len(labels), self.batch_size, self.seed, device, rank, world)
            # The module's optimiser steps per Lightning step (ClassifierModule.steps_per_execution).
            group = getattr(trainer.lightning_module, "steps_per_execution", 1) if trainer is not None else 1
            return ChunkedBatches(images, labels, sampler, functools.partial(self.batch_input, train=True),
                                  group=group)
        # batch_size=None: the sampler already yields whole batches of indices. A private generator:
        # creating an iterator draws a seed from it, and drawing from the global RNG instead would
        # shift augmentation and dropout randomness when a run resumes from a checkpoint.
        sampler = OrderedBatches(len(labels), self.eval_batch_size, device)
        return DataLoader(_IndexedTensors(images, labels), sampler=sampler, batch_size=None,
                          generator=torch.Generator())

    def batch_input(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """A batch of stored images as the model takes it: normalised floats, augmented for training."""
        return model_input(x, self.augment if train else None)

    def train_dataloader(self):
        if self.augment is not None:
            self.augment.reset()  # a new fit draws its own augmentation parameters
        images, labels = self.split("train")
        return self.loader(images, labels if self.train_targets is None else self.train_targets, train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        return self._loader(self.predict_split, train=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # A batch is (images, labels), or a BatchGroup of them: two direct moves each (no-ops when
        # the split already lives on the device) instead of Lightning's generic walk over the batch.
        if isinstance(batch, BatchGroup):
            return BatchGroup(self.transfer_batch_to_device(b, device, dataloader_idx) for b in batch)
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training:
            return batch  # the training loader made it ready (ChunkedBatches)
        x, y = batch
        return self.batch_input(x, train=False), y


def read_teacher(path, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A teacher's class probabilities for the training split (knowledge distillation), from a
    stage's ``probs.npz``: a train stage's ``train_probs`` or a score-fusion stage's
    ``mean_train_probs``. The file's ``train_labels`` must equal this split's labels row for row,
    which they do when the teacher was trained with the same data settings (data files, split
    options, ``seed``, FER+ options)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.teacher_probs: {path} not found (a stage's probs.npz)")
    try:
        f = load_npz(path)
    except UserError as e:
        raise UserError(f"data.teacher_probs: {e} (a stage's probs.npz)") from None
    key = next((k for k in ("train_probs", "mean_train_probs") if k in f), None)
    if key is None or "train_labels" not in f:
        raise UserError(f"data.teacher_probs: {path} has no training-split scores (train_probs or "
                        f"mean_train_probs, and train_labels): pass a train or score_fusion stage's probs.npz")
    probs, teacher_labels = f[key], f["train_labels"]
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise UserError(f"data.teacher_probs: {path}: {key} has shape {probs.shape}, "
                        f"expected (rows, {num_classes})")
    if len(teacher_labels) != len(labels) or not np.array_equal(teacher_labels, labels.numpy()):
        raise UserError(f"data.teacher_probs: {path}: its training split ({len(teacher_labels)} rows) is not this "
                        f"one ({len(labels)} rows, or other labels): train the teacher with the same data settings")
    return torch.from_numpy(probs).float()


def check_count(key: str, value) -> None:
    """A data module's size option (batch size, image side): a whole number of 1 or more."""
    if not isinstance(value, int) or value < 1:
        raise UserError(f"data.{key}: {value}: expected a whole number of 1 or more")


def check_share(key: str, value) -> None:
    """A data module's held-out share (validation, test): strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise UserError(f"data.{key}: {value} must lie strictly between 0 and 1")


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch ``[N, 1, H, W]`` to ``size``×``size`` once, at load time."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int):
    """Indices (keep, held_out) with ``fraction`` of every class held out, deterministically."""
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        held.append(idx[: int(round(len(idx) * fraction))])
    held = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().flatten(), held
