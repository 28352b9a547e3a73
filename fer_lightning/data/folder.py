"""Faces stored as ``root/<class>/*.png|jpg|...`` (sub-folders of a class folder included; hidden
files and folders and files that are not images left out), read once into grey uint8 tensors.

Class folder names are mapped onto the FER2013 classes with common synonyms (``anger`` →
``angry``, ``happiness`` → ``happy``, ...). Splits: ``train_root`` gives train (and a stratified
``val_fraction`` validation slice); ``test_root`` gives test, or, without one, a stratified
``test_fraction`` slice of ``train_root`` is held out. ``fractions: [0.7, 0.15, 0.15]`` instead
cuts one labelled folder into stratified train / val / test shares of the whole (paper 004).
``face_crop: true`` cuts each image to its largest face first (OpenCV's Haar cascade, as
``predict`` does), for folders of photos rather than of face crops.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_lightning import CLASS_NAMES
from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.base import TensorDataModule, check_count, check_share, stratified_split
from fer_lightning.errors import UserError
from fer_lightning.photos import IMAGE_SUFFIXES, images_under, note_once

SYNONYMS = {
    "anger": "angry", "angry": "angry", "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "happy": "happy", "happiness": "happy",
    "joy": "happy", "sad": "sad", "sadness": "sad", "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
}


def class_index(folder_name: str) -> int | None:
    name = SYNONYMS.get(folder_name.strip().lower())
    return None if name is None else CLASS_NAMES.index(name)


def to_grey(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit grey. Pillow's ``convert("L")`` clips 16-bit values at 255, which turns a
    16-bit PNG nearly white; those keep their top 8 bits, as OpenCV (and so ``predict``) reads them."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8))
    return im.convert("L")


def load_grey(f: Path, image_size: int, face_crop: bool = False, no_face: list | None = None) -> np.ndarray:
    """One image file as grey uint8 ``image_size``². With ``face_crop``, cut to its largest face
    first; an image where no face is found is used whole and its path appended to ``no_face``."""
    try:
        with Image.open(f) as im:
            # a phone photo's EXIF orientation turned upright, as OpenCV (predict) turns it
            grey = to_grey(ImageOps.exif_transpose(im))
            if face_crop:
                from fer_lightning.photos import largest_face

                face = largest_face(np.asarray(grey, dtype=np.uint8))
                if face is not None:
                    grey = Image.fromarray(face)
                elif no_face is not None:
                    no_face.append(str(f))
            if grey.size != (image_size, image_size):
                grey = grey.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{f}: unreadable image ({e.__class__.__name__})")


def warn_no_face(root, no_face: list, total: int):
    if no_face:
        note_once(f"warning: {root}: no face found in {len(no_face)} of {total} images (e.g. {no_face[0]}); "
                  f"used them whole")


def read_image_folder(root, image_size: int = 48, skipped: dict | None = None, face_crop: bool = False,
                      no_face: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every image under ``root/<class>/`` as grey ``image_size``² uint8 (``face_crop``,
    ``no_face``: as ``load_grey``).

    A class folder that maps to no FER class (e.g. ``contempt``) is an error, unless ``skipped``
    is given: then its images are counted there (``{folder name: count}``) and left out."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    images, labels = [], []
    for d in class_dirs:
        label = class_index(d.name)
        if label is None and skipped is not None:
            skipped[d.name] = len(images_under(d))
            continue
        if label is None:
            raise UserError(f"{d}: unknown class name '{d.name}' (expected one of "
                            f"{', '.join(CLASS_NAMES)} or a common synonym)")
        files = images_under(d)  # sub-folders too (one per subject or session, say)
        if not files:
            raise UserError(f"{d}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            images.append(load_grey(f, image_size, face_crop, no_face))
            labels.append(label)
    if not images:
        raise UserError(f"{root}: no images of the classes {', '.join(CLASS_NAMES)}")
    return torch.from_numpy(np.stack(images)).unsqueeze(1), torch.tensor(labels, dtype=torch.int64)


class ImageFolderDataModule(TensorDataModule):
    """Your own faces, one folder per class.

    Args:
        train_root: folder of class folders used for training (and validation).
        test_root: optional folder of class folders used as the test split.
        val_fraction / test_fraction: stratified held-out slices (test only without test_root).
        fractions: ``[train, val, test]`` shares of ``train_root`` (summing to 1), instead of the
            two fractions above; needs no ``test_root``.
        image_size: side the images are resized to (48 for the paper-000 CNNs).
        face_crop: cut each image to its largest face first (Haar cascade); images without a
            detected face are used whole (a warning counts them).
    """

    def __init__(self, train_root: str, test_root: str | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, fractions: list[float] | None = None, image_size: int = 48,
                 face_crop: bool = False, batch_size: int = 256, eval_batch_size: int = 1024,
                 augment: BatchAugment | None = None, seed: int = 0, teacher_probs: str | None = None,
                 teacher_weight: float = 0.5):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         seed=seed, teacher_probs=teacher_probs, teacher_weight=teacher_weight)
        if fractions is not None:
            if test_root or len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
                raise UserError(f"data.fractions: {fractions}: expected three positive shares summing to 1 "
                                f"(train, val, test), and no test_root")
            test_fraction, val_fraction = fractions[2], fractions[1] / (fractions[0] + fractions[1])
        check_share("val_fraction", val_fraction)
        check_count("image_size", image_size)
        if not test_root:
            check_share("test_fraction", test_fraction)
        self.train_root, self.test_root = train_root, test_root
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.image_size, self.face_crop = image_size, face_crop

    def load_splits(self):
        x, y = self.read(self.train_root)
        if self.test_root:
            test = self.read(self.test_root)
        else:
            keep, held = stratified_split(y, self.test_fraction, self.seed + 1)
            test, x, y = (x[held], y[held]), x[keep], y[keep]
        keep, held = stratified_split(y, self.val_fraction, self.seed)
        return {"train": (x[keep], y[keep]), "val": (x[held], y[held]), "test": test}

    def read(self, root):
        no_face = []
        x, y = read_image_folder(root, self.image_size, face_crop=self.face_crop, no_face=no_face)
        warn_no_face(root, no_face, len(y))
        return x, y
