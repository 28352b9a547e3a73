"""FER2013 in the original Kaggle CSV format (``emotion,pixels,Usage``; plain or gzip).

The CSV is parsed once into uint8 tensors and cached as a ``.pt`` file keyed by the CSV's content
hash (in ``cache_dir``, default ``~/.cache/fer_lightning``), so later runs load in well under a
second.
"""

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np
import torch

from fer_lightning.artifacts import atomic_write_bytes, sha256_file
from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.base import TensorDataModule, check_share, stratified_split
from fer_lightning.errors import UserError

USAGES = ("Training", "PublicTest", "PrivateTest")
N_PIXELS = 48 * 48


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_LIGHTNING_CACHE", Path.home() / ".cache" / "fer_lightning"))


def read_text(path: Path) -> str:
    """A CSV's text, plain or gzip; a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read as {'gzip ' if opener is gzip.open else ''}text: {e}")


def read_fer2013_csv(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the CSV into (uint8 images [N, 48, 48], int64 labels [N], usage codes [N]).

    Usage codes index :data:`USAGES`. Any malformed row raises a :class:`UserError` naming the file
    and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FER2013 CSV not found (pass the path to fer2013.csv or .csv.gz)")
    reader = csv.reader(io.StringIO(read_text(path)))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path}: file is empty; expected a header 'emotion,pixels,Usage'")
    header = [h.strip() for h in header]
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; found {','.join(header)} "
                        f"(expected the Kaggle header 'emotion,pixels,Usage')")
    ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("Usage")
    pixels, labels, usage = [], [], []
    usage_code = {u: i for i, u in enumerate(USAGES)}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise UserError(f"{path}: line {line}: {len(row)} fields, expected {len(header)}")
        try:
            emotion = int(row[ie])
        except ValueError:
            raise UserError(f"{path}: line {line}: emotion '{row[ie]}' is not an integer 0-6")
        if not 0 <= emotion <= 6:
            raise UserError(f"{path}: line {line}: unknown emotion id {emotion} (expected 0-6)")
        if row[iu] not in usage_code:
            raise UserError(f"{path}: line {line}: unknown Usage '{row[iu]}' "
                            f"(expected one of {', '.join(USAGES)})")
        pixels.append((line, row[ip]))
        labels.append(emotion)
        usage.append(usage_code[row[iu]])
    if not labels:
        raise UserError(f"{path}: no data rows after the header")
    return (_parse_pixels(path, pixels).reshape(-1, 48, 48), np.array(labels, dtype=np.int64),
            np.array(usage, dtype=np.int64))


def _parse_pixels(path: Path, pixels: list[tuple[int, str]]) -> np.ndarray:
    """The rows' pixel strings as uint8 ``[N, 2304]``. A well-formed file (digits and single spaces
    only, 2304 values a row: the Kaggle file) is parsed by one numpy call over all rows, about twice
    as fast as one call a row; anything else row by row, naming the line of the first bad row."""
    texts = [text for _, text in pixels]
    joined = " ".join(texts).encode()
    if (not joined.translate(None, b"0123456789 ") and b"  " not in joined and joined[:1] != b" "
            and joined[-1:] != b" " and all(t.count(" ") == N_PIXELS - 1 for t in texts)):
        flat = np.fromstring(joined, dtype=np.int64, sep=" ")  # digits and single spaces: cannot fail
        if flat.max(initial=0) <= 255:
            return flat.astype(np.uint8).reshape(-1, N_PIXELS)
    images = np.empty((len(texts), N_PIXELS), dtype=np.uint8)
    for i, (line, text) in enumerate(pixels):
        try:
            pix = np.array(text.split(), dtype=np.int64)
        except ValueError:
            raise UserError(f"{path}: line {line}: pixels contain a non-integer value")
        if pix.size != N_PIXELS:
            raise UserError(f"{path}: line {line}: pixels has {pix.size} values, expected {N_PIXELS}")
        if pix.min() < 0 or pix.max() > 255:
            raise UserError(f"{path}: line {line}: pixel values must lie in 0..255")
        images[i] = pix
    return images


def load_fer2013(path, cache_dir=None) -> dict[str, torch.Tensor]:
    """Tensors ``images [N,1,48,48] uint8``, ``labels``, ``usage``, from the cache when possible."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FER2013 CSV not found (pass the path to fer2013.csv or .csv.gz)")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / f"fer2013-{sha256_file(path)[:16]}.pt"
    if cached.is_file():
        try:
            return torch.load(cached, weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            try:
                cached.unlink(missing_ok=True)
            except OSError:  # a read-only cache folder: the CSV is parsed again
                pass
    images, labels, usage = read_fer2013_csv(path)
    data = {"images": torch.from_numpy(images).unsqueeze(1), "labels": torch.from_numpy(labels),
            "usage": torch.from_numpy(usage)}
    try:
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write_bytes(cached, buf.getvalue())
    except OSError:
        pass  # an unwritable cache only costs the next run a re-parse
    return data


FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                   "unknown", "NF")
FERPLUS_TO_FER = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                  "anger": "angry", "disgust": "disgust", "fear": "fear"}


def read_ferplus(path, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FER+ labels row-aligned with fer2013.csv: the majority-vote class (FER2013 class indices),
    the vote distribution over the 7 classes (``[N, 7]``, rows sum to 1) and a keep-mask. Rows
    whose top vote is contempt (not one of the 7 classes), unknown or NF (not a face) are dropped,
    as in the FER+ protocol; the remaining rows' contempt/unknown votes leave the distribution."""
    from fer_lightning import CLASS_NAMES

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FER+ votes file not found (fer2013new.csv)")
    reader = csv.reader(io.StringIO(read_text(path)))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in FERPLUS_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}: not a FER+ votes file: no column(s) {', '.join(missing)}")
    cols = [header.index(c) for c in FERPLUS_COLUMNS]
    votes = []
    for line, row in enumerate(reader, start=2):
        try:
            votes.append([float(row[i]) for i in cols])
        except (ValueError, IndexError):
            raise UserError(f"{path}: line {line}: missing or non-numeric vote counts") from None
    votes = np.array(votes, dtype=np.float32).reshape(-1, len(FERPLUS_COLUMNS))
    if len(votes) != n_rows:
        raise UserError(f"{path}: {len(votes)} rows, but the FER2013 CSV has {n_rows}: the FER+ file must be "
                        f"row-aligned with it")
    top = votes.argmax(1)
    keep = top < FERPLUS_COLUMNS.index("contempt")
    order = [FERPLUS_COLUMNS.index(next(k for k, v in FERPLUS_TO_FER.items() if v == c)) for c in CLASS_NAMES]
    seven = votes[:, order]  # columns in our class order
    soft = np.divide(seven, seven.sum(1, keepdims=True), out=np.zeros_like(seven),
                     where=seven.sum(1, keepdims=True) > 0)
    mapping = np.array([CLASS_NAMES.index(FERPLUS_TO_FER[c]) for c in FERPLUS_COLUMNS[:7]])
    return mapping[np.minimum(top, 6)], soft, keep


class FER2013DataModule(TensorDataModule):
    """FER2013 from the Kaggle CSV.

    Splits: ``train`` (Training minus the validation slice), ``val``, ``test`` = PublicTest +
    PrivateTest (the seed paper's test set), and ``public_test`` / ``private_test`` (the literature
    reports PrivateTest alone).

    Args:
        csv_path: ``fer2013.csv`` or ``fer2013.csv.gz``.
        val_split: ``holdout`` (default): a stratified ``val_fraction`` slice of Training, so that
            no test row is ever used for tuning; ``PublicTest``: validate on PublicTest (the common
            Kaggle protocol; then report PrivateTest only).
        val_fraction: size of the holdout slice.
        cache_dir: where the parsed tensor cache goes (default ``~/.cache/fer_lightning``).
        ferplus_csv: FER+ votes (``fer2013new.csv``, row-aligned): train and score on the FER+
            majority-vote labels instead of the original ones, dropping contempt/unknown/not-a-face.
        ferplus_labels: with ``ferplus_csv``: ``majority`` trains on the majority vote; ``soft``
            trains on the vote distribution (cross-entropy against it, FER+'s "CEL" scheme).
            Validation and test are always scored against the majority vote.
        teacher_probs, teacher_weight: knowledge distillation (``TensorDataModule``); with
            ``ferplus_labels: soft`` the teacher's scores blend with FER+'s vote distribution.
    """

    eval_splits = ("train", "val", "test", "public_test", "private_test")

    def __init__(self, csv_path: str, val_split: str = "holdout", val_fraction: float = 0.1,
                 cache_dir: str | None = None, batch_size: int = 256, eval_batch_size: int = 1024,
                 augment: BatchAugment | None = None, seed: int = 0, ferplus_csv: str | None = None,
                 ferplus_labels: str = "majority", teacher_probs: str | None = None,
                 teacher_weight: float = 0.5):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         seed=seed, teacher_probs=teacher_probs, teacher_weight=teacher_weight)
        if val_split not in ("holdout", "PublicTest"):
            raise UserError(f"data.val_split: '{val_split}' is not one of holdout, PublicTest")
        check_share("val_fraction", val_fraction)
        self.csv_path, self.val_split, self.val_fraction = csv_path, val_split, val_fraction
        self.cache_dir = cache_dir
        self.ferplus_csv = ferplus_csv
        if ferplus_labels not in ("majority", "soft"):
            raise UserError(f"data.ferplus_labels: '{ferplus_labels}' is not one of majority, soft")
        if ferplus_labels == "soft" and not ferplus_csv:
            raise UserError("data.ferplus_labels: soft needs data.ferplus_csv (the FER+ votes file)")
        self.ferplus_labels = ferplus_labels

    def load_splits(self):
        d = load_fer2013(self.csv_path, self.cache_dir)
        images, labels, usage = d["images"], d["labels"], d["usage"]
        soft = None
        if self.ferplus_csv:
            plus, soft, keep = read_ferplus(self.ferplus_csv, len(labels))
            keep = torch.from_numpy(keep)
            images, labels, usage = images[keep], torch.from_numpy(plus)[keep], usage[keep]
            soft = torch.from_numpy(soft)[keep]

        def pick(mask):
            idx = mask.nonzero().flatten()
            return images[idx], labels[idx]

        train, public, private = (pick(usage == i) for i in range(3))
        for name, (_, y) in zip(USAGES, (train, public, private)):
            if len(y) == 0:
                with_ferplus = f" with FER+ labels {self.ferplus_csv}" if self.ferplus_csv else ""
                raise UserError(f"{self.csv_path}{with_ferplus}: no rows with Usage '{name}' "
                                f"(each of {', '.join(USAGES)} needs rows)")
        train_soft = soft[usage == 0] if soft is not None else None
        if self.val_split == "holdout":
            keep, held = stratified_split(train[1], self.val_fraction, self.seed)
            val = (train[0][held], train[1][held])
            train = (train[0][keep], train[1][keep])
            train_soft = train_soft[keep] if train_soft is not None else None
        else:
            val = public
        if self.ferplus_labels == "soft":
            self.train_targets = train_soft   # the base class blends a teacher's scores into these
        test = (torch.cat([public[0], private[0]]), torch.cat([public[1], private[1]]))
        return {"train": train, "val": val, "test": test, "public_test": public,
                "private_test": private}
