"""JAFFE (Lyons et al. 1998): 213 grey 256×256 TIFFs of 10 subjects, named
``<subject>.<EXPR><n>.<id>.tiff`` (e.g. ``KA.AN1.39.tiff``); EXPR is one of AN DI FE HA NE SA SU.
Some files are palette-mode TIFFs; all are read as grey.

Splits:
- ``split: paper`` — paper 001's 133 / 23 / 57 train / val / test, seeded and stratified by
  expression;
- ``split: loso`` — leave one subject out: ``fold`` k ∈ 0..9 tests on the k-th subject (sorted by
  code), validation is a stratified ``val_fraction`` of the other nine. Subject-independent
  numbers are the ones to trust on a 10-person dataset.
"""

import re
from pathlib import Path

import numpy as np
import torch

from fer_lightning import CLASS_NAMES
from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.base import TensorDataModule, check_count, check_share, stratified_split
from fer_lightning.data.folder import load_grey, warn_no_face
from fer_lightning.errors import UserError

CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad",
         "SU": "surprise"}
NAME = re.compile(r"^(?P<subject>[A-Z]{2})\.(?P<code>[A-Z]{2})(?P<n>\d+)\.(?P<id>\d+)\.tiff?$", re.I)
PAPER_SIZES = (133, 23, 57)  # train, val, test


def parse_jaffe_name(name: str) -> tuple[str, int]:
    """``KA.AN1.39.tiff`` → (``KA``, index of ``angry``)."""
    m = NAME.match(name)
    code = m and m["code"].upper()
    if not m or code not in CODES:
        raise UserError(f"{name}: not a JAFFE file name (expected <subject>.<AN|DI|FE|HA|NE|SA|SU><n>.<id>.tiff, "
                        f"e.g. KA.AN1.39.tiff)")
    return m["subject"].upper(), CLASS_NAMES.index(CODES[code])


def read_jaffe(root, image_size: int = 48, face_crop: bool = False, no_face: list | None = None):
    """(uint8 images [N, 1, s, s], labels [N], subject codes [N]) from a folder of JAFFE TIFFs
    (``face_crop``, ``no_face``: as ``folder.load_grey``)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: JAFFE folder not found")
    files = sorted(f for f in root.iterdir() if f.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise UserError(f"{root}: no .tiff files (expected JAFFE files such as KA.AN1.39.tiff)")
    images, labels, subjects = [], [], []
    for f in files:
        subject, label = parse_jaffe_name(f.name)
        images.append(load_grey(f, image_size, face_crop, no_face))
        labels.append(label)
        subjects.append(subject)
    return (torch.from_numpy(np.stack(images)).unsqueeze(1), torch.tensor(labels, dtype=torch.int64),
            np.array(subjects))


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation in which every prefix holds the classes in (nearly) their overall
    proportions: cutting it gives stratified splits of exact sizes."""
    gen = torch.Generator().manual_seed(seed)
    key = torch.empty(len(labels))
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        key[idx] = (torch.arange(len(idx)) + torch.rand(len(idx), generator=gen)) / len(idx)
    return key.argsort()


class JAFFEDataModule(TensorDataModule):
    """JAFFE from its folder of TIFFs.

    Args:
        root: the folder holding the 213 ``*.tiff`` files.
        split: ``paper`` (133/23/57) or ``loso`` (leave one subject out).
        fold: with ``loso``, which subject (0..9, in sorted subject-code order) is the test set.
        val_fraction: with ``loso``, the stratified validation share of the other subjects.
        image_size: side the 256×256 images are resized to.
        face_crop: cut each image to its face first (Haar cascade) rather than keep the whole
            head, hair and background.
    """

    def __init__(self, root: str, split: str = "paper", fold: int = 0, val_fraction: float = 0.1,
                 image_size: int = 48, face_crop: bool = False, batch_size: int = 16, eval_batch_size: int = 256,
                 augment: BatchAugment | None = None, seed: int = 0, teacher_probs: str | None = None,
                 teacher_weight: float = 0.5):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         seed=seed, teacher_probs=teacher_probs, teacher_weight=teacher_weight)
        if split not in ("paper", "loso"):
            raise UserError(f"data.split: '{split}' is not one of paper, loso")
        check_share("val_fraction", val_fraction)
        check_count("image_size", image_size)
        self.root, self.split_mode, self.fold = root, split, fold
        self.val_fraction, self.image_size, self.face_crop = val_fraction, image_size, face_crop

    def load_splits(self):
        no_face = []
        x, y, subjects = read_jaffe(self.root, self.image_size, self.face_crop, no_face)
        warn_no_face(self.root, no_face, len(y))
        if self.split_mode == "paper":
            if len(y) != sum(PAPER_SIZES):
                raise UserError(f"{self.root}: the paper split needs the 213 JAFFE images, found {len(y)}")
            order = stratified_order(y, self.seed)
            test, val, train = order[:57], order[57:80], order[80:]
        else:
            codes = sorted(set(subjects))
            if not 0 <= self.fold < len(codes):
                raise UserError(f"data.fold: {self.fold} is out of range 0..{len(codes) - 1} "
                                f"({len(codes)} subjects: {', '.join(codes)})")
            is_test = torch.from_numpy(subjects == codes[self.fold])
            test = is_test.nonzero().flatten()
            rest = (~is_test).nonzero().flatten()
            keep, held = stratified_split(y[rest], self.val_fraction, self.seed)
            train, val = rest[keep], rest[held]
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
