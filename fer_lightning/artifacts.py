"""Atomic artifact writes and content hashes.

Every artifact is written to a temporary file in the same directory and renamed into place, so a
crash leaves either the old file or the new one, never half of one.
"""

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fer_lightning.errors import UserError

# mkstemp creates its file readable by its owner only; an artifact gets the mode a plain open()
# would give it (0o666 less the umask), so others who may read a run's outputs still can.
_UMASK = os.umask(0o22)
os.umask(_UMASK)


def output_dir(path) -> Path:
    """``path``, checked to be a place for a command's outputs, before any work is done: a one-line
    error where a file is in the way or there is no permission. Nothing is created here, so a
    command that fails later leaves no empty folder behind (the writers create it)."""
    path = Path(path)
    existing = path
    while not existing.exists():  # its nearest existing folder ('.' or '/' at the latest)
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"no permission to write in {existing}"
    else:
        return path
    raise UserError(f"{path}: cannot write outputs there ({problem}); pass another --out")


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_npz(path, **arrays) -> None:
    """Like ``np.savez``, but byte-identical for identical arrays (``np.savez`` stamps each zip
    entry with the current time, which would change the hash of an unchanged artifact)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue())
    atomic_write_bytes(path, buf.getvalue())


# what reading a damaged .npz raises: BadZipFile (not an OSError), zlib.error, EOFError, or numpy's
# ValueError for a header or a file that is not an archive
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _unreadable_npz(path, e: Exception) -> UserError:
    if not Path(path).is_file():
        return UserError(f"{path}: file not found")
    return UserError(f"{path}: not a readable .npz file (cut short, or another format?): {e.__class__.__name__}")


# In a kept file (bench/keep_probs.py), the name of the split that `val` repeats and that stands in
# for it: FER2013's recipes validate on PublicTest, so their `val` scores are PublicTest's again.
VAL_COPY_OF = "val_copy_of"


def load_npz(path) -> dict:
    """All arrays of an ``.npz`` file, loaded (the file is closed on return); float16 arrays (the
    probabilities kept in the repository by ``bench/keep_probs.py``) come back as float32. A file
    that is missing or not a whole ``.npz`` is a one-line error naming it."""
    try:
        z = np.load(path)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a single .npy array
            raise ValueError("one array, not an archive")
        with z:
            arrays = {k: z[k] for k in z.files}  # each z[k] reads the array from the file again
    except _NPZ_ERRORS as e:
        raise _unreadable_npz(path, e) from None
    arrays = {k: a.astype(np.float32) if a.dtype == np.float16 else a for k, a in arrays.items()}
    if "test_probs" not in arrays:  # kept files leave out FER2013's second copy of its test splits
        arrays.update(fer2013_test_split(arrays) or {})
    if VAL_COPY_OF in arrays:  # ... and a validation split that repeats PublicTest
        source = str(arrays.pop(VAL_COPY_OF))
        if f"{source}_probs" not in arrays or f"{source}_labels" not in arrays:
            raise UserError(f"{path}: its `val` split is to repeat '{source}', which the file lacks")
        arrays.update({f"val_{kind}": arrays[f"{source}_{kind}"] for kind in ("probs", "labels")})
    return arrays


def fer2013_test_split(arrays: dict) -> dict | None:
    """FER2013's ``test`` split (``test_probs``, ``test_labels``): PublicTest then PrivateTest, or
    ``None`` when ``arrays`` lack either."""
    keys = [f"{split}_{kind}" for split in ("public_test", "private_test") for kind in ("probs", "labels")]
    if not all(k in arrays for k in keys):
        return None
    return {f"test_{kind}": np.concatenate([arrays[f"public_test_{kind}"], arrays[f"private_test_{kind}"]])
            for kind in ("probs", "labels")}


def load_json_object(path) -> dict:
    """A JSON file holding an object (a stage's ``metrics.json``), or a one-line error naming it."""
    try:
        obj = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    except ValueError as e:
        raise UserError(f"{path}: not a readable JSON file (cut short?): {e}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object (a stage's metrics.json), found {type(obj).__name__}")
    return obj


def npz_array_shape(path, key: str) -> tuple[int, ...] | None:
    """The shape of array ``key`` of an ``.npz`` file, read from its header alone (None if absent)."""
    try:
        with zipfile.ZipFile(path) as z:
            if f"{key}.npy" not in z.namelist():
                return None
            with z.open(f"{key}.npy") as f:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[np.lib.format.read_magic(f)]
                return read_header(f)[0]
    except _NPZ_ERRORS as e:
        raise _unreadable_npz(path, e) from None


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_path(path) -> str:
    """Content hash of a file, or of a directory tree (relative names + file hashes)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()
