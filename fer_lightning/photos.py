"""Predict expressions on ordinary photos: any size, colour or grey, several faces each.

Faces are found with OpenCV's Haar cascade (shipped in the opencv-python-headless wheel), cropped,
made grey and resized to the model's input, and all faces of all photos go through the model (or
the score-fused ensemble) in batches. Output: ``predictions.csv`` (file, face box, per-class
probabilities, label) and annotated copies of the photos. A photo without a face gets a
``no_face`` row; an unreadable file a message and an ``unreadable`` row, and the rest go on.

    fer-lightning predict --model runs/x/cnn1/model.ckpt [--model ...] PHOTO_OR_FOLDER ... --out DIR
"""

import argparse
import csv
import io
import sys
import threading
from pathlib import Path

import numpy as np

from fer_lightning import CLASS_NAMES, at_least_one, usable_cores
from fer_lightning.artifacts import atomic_write_bytes, atomic_write_text, output_dir
from fer_lightning.errors import UserError

# what both Pillow (image folders) and OpenCV (photos) decode
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
FACE_SIZE = 48  # crops are stored at this size; each model resizes to its own input


def images_under(folder: Path) -> list[Path]:
    """The image files under ``folder`` and its sub-folders, sorted. Hidden files and folders
    (macOS's ``._x.jpg`` copies, Jupyter's ``.ipynb_checkpoints``) are left out, and so are other
    files (``Thumbs.db``, notes), which a note counts: not an error."""
    found = sorted(f for f in folder.rglob("*")
                   if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    images = [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(images) < len(found):
        other = next(f for f in found if f.suffix.lower() not in IMAGE_SUFFIXES)
        note_once(f"note: {folder}: {len(found) - len(images)} file(s) that are not images left out "
                   f"(e.g. {other.relative_to(folder)})")
    return images


_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """Print ``message`` once per process: a pipeline reads the same folder for each stage."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(message, file=sys.stderr)


def photo_files(paths) -> list[Path]:
    """The named files, and the image files under the named folders (``images_under``)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += images_under(p)
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    first = {}
    for f in files:  # each photo once, where it is first named
        first.setdefault(f.resolve(), f)
    return list(first.values())


def face_detector():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise UserError("OpenCV's Haar face cascade could not be loaded (reinstall opencv-python-headless)")
    return cascade


def detect_faces(grey: np.ndarray, cascade, min_face: int = 50) -> list[tuple[int, int, int, int]]:
    boxes = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    return sorted((int(x), int(y), int(w), int(h)) for x, y, w, h in (boxes if len(boxes) else []))


def thread_cascade(_per_thread=threading.local()):
    """This thread's face cascade: a cascade keeps per-image state while it scans."""
    if not hasattr(_per_thread, "cascade"):
        _per_thread.cascade = face_detector()
    return _per_thread.cascade


def largest_face(grey: np.ndarray, min_face: int = 50) -> np.ndarray | None:
    """The largest face of a grey image, cut to its Haar box as ``predict`` cuts faces; ``None``
    when there is none."""
    boxes = detect_faces(grey, thread_cascade(), min_face)
    if not boxes:
        return None
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
    return grey[y:y + h, x:x + w]


def jpeg_cut_short(data: bytes) -> bool:
    """Whether ``data`` is a JPEG that ends inside its last scan (a partial download or copy).
    OpenCV decodes such a file as far as it goes, grey below the cut, and libjpeg's warning does
    not name the file. Byte stuffing keeps the end marker (FF D9) out of scan data, so a whole
    file has one after its last start-of-scan (FF DA); an EXIF thumbnail's end marker comes
    before the main image's scans."""
    return data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def read_grey(path: Path) -> np.ndarray | None:
    """The photo as a grey array (EXIF orientation applied, as ``cv2.imread`` does), or ``None``
    when it cannot be read whole."""
    import cv2

    try:
        data = Path(path).read_bytes()
    except OSError:  # a folder named x.jpg, no permission
        return None
    if not data or jpeg_cut_short(data):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def find_faces(path: Path, min_face: int):
    """``(boxes, 48x48 grey crops)`` of one photo, or ``None`` when it cannot be read."""
    import cv2

    image = read_grey(path)
    if image is None:
        return None
    boxes = detect_faces(image, thread_cascade(), min_face)
    return boxes, [cv2.resize(image[y:y + h, x:x + w], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
                   for x, y, w, h in boxes]


def parallel_map(fn, items, workers: int):
    """``map(fn, items)`` in order on ``workers`` threads: OpenCV releases the GIL while it decodes
    and scans a photo, so photos are processed side by side, one OpenCV thread each, rather than
    one photo at a time with OpenCV splitting its scales across threads (7 % faster on 2 cores;
    README: Performance). OpenCV's own log is silenced meanwhile: its decoder errors do not name
    the file, and ``predict`` says which photo was unreadable."""
    import cv2
    from concurrent.futures import ThreadPoolExecutor

    log = cv2.utils.logging
    threads, level = cv2.getNumThreads(), log.getLogLevel()
    cv2.setNumThreads(1)
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            yield from pool.map(fn, items)
    finally:
        cv2.setNumThreads(threads)
        log.setLogLevel(level)


def predict_photos(models: list[str], inputs: list[str], out_dir, fusion: str = "mean", tta: str = "none",
                   min_face: int = 50, annotate: bool = True, device: str = "cpu", workers: int | None = None) -> list[dict]:
    import cv2
    import torch

    from fer_lightning.checkpoints import load_net
    from fer_lightning.evaluate import predict_probs

    out = output_dir(out_dir)
    nets = [load_net(m) for m in models]
    files = photo_files(inputs)
    face_detector()  # a clear error before any work if the cascade file is missing
    workers = workers or usable_cores()
    rows, crops, readable = [], [], []
    for f, found in zip(files, parallel_map(lambda f: find_faces(f, min_face), files, workers)):
        if found is None:
            print(f"warning: {f}: unreadable image, skipped", file=sys.stderr)
            rows.append({"file": str(f), "label": "unreadable"})
            continue
        boxes, face_crops = found
        if not boxes:
            rows.append({"file": str(f), "label": "no_face"})
        for i, ((x, y, w, h), crop) in enumerate(zip(boxes, face_crops)):
            crops.append(crop)
            rows.append({"file": str(f), "face": i, "x": x, "y": y, "w": w, "h": h, "crop": len(crops) - 1})
        readable.append(f)
    if crops:
        faces = torch.from_numpy(np.stack(crops)).unsqueeze(1)
        probs = predict_probs(nets, faces, fusion, tta, device=device)
        for r in rows:
            if "crop" in r:
                p = probs[r.pop("crop")]
                r.update({f"p_{c}": round(float(v), 4) for c, v in zip(CLASS_NAMES, p)})
                r["label"] = CLASS_NAMES[int(p.argmax())]
    write_csv(rows, out / "predictions.csv")
    if annotate:  # photos are read again rather than all held in memory
        faces = {}
        for r in rows:
            if "x" in r:
                faces.setdefault(r["file"], []).append(r)
        names = annotated_names(readable)
        for _ in parallel_map(lambda f: annotate_photo(cv2.imread(str(f), cv2.IMREAD_COLOR), faces.get(str(f), []),
                                                       out / "annotated" / names[f]), readable, workers):
            pass
    return rows


def annotated_names(files: list[Path]) -> dict[Path, str]:
    """``<stem>.jpg`` per photo; ``<stem>_2.jpg``, ... where stems repeat (a/x.jpg, b/x.jpg, x.png)."""
    names, taken = {}, set()
    for f in files:
        name, k = f"{f.stem}.jpg", 1
        while name in taken:
            k += 1
            name = f"{f.stem}_{k}.jpg"
        names[f] = name
        taken.add(name)
    return names


def write_csv(rows: list[dict], path: Path):
    fields = ["file", "face", "x", "y", "w", "h"] + [f"p_{c}" for c in CLASS_NAMES] + ["label"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def annotate_photo(image: np.ndarray, faces: list[dict], path: Path):
    import cv2

    thick = max(1, round(max(image.shape[:2]) / 400))
    for r in faces:
        x, y, w, h = r["x"], r["y"], r["w"], r["h"]
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 200, 0), thick)
        text = f"{r['label']} {r['p_' + r['label']]:.2f}"
        cv2.putText(image, text, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick + 0.1,
                    (0, 200, 0), thick, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", image)
    if ok:
        atomic_write_bytes(path, encoded.tobytes())


def main(argv) -> int:
    import torch

    from fer_lightning.evaluate import device_arg
    from fer_lightning.tta import TTA_MODES

    ap = argparse.ArgumentParser(prog="fer-lightning predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="photos and/or folders of photos")
    ap.add_argument("--model", action="append", required=True, help="a model.ckpt, or a finished stage's folder (repeat for an ensemble)")
    ap.add_argument("--fusion", default="mean", choices=["mean", "max"])
    ap.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation")
    ap.add_argument("--min-face", type=at_least_one, default=50, help="smallest face side in pixels")
    ap.add_argument("--no-annotate", action="store_true", help="skip the annotated copies")
    ap.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=at_least_one, help="photos read and scanned at once (default: one per CPU core)")
    ap.add_argument("--out", default="runs/predict")
    a = ap.parse_args(argv)
    rows = predict_photos(a.model, a.inputs, a.out, a.fusion, a.tta, a.min_face, not a.no_annotate, a.device,
                         a.workers)
    faces = sum("x" in r for r in rows)
    print(f"{len({r['file'] for r in rows})} photo(s), {faces} face(s); written: {Path(a.out) / 'predictions.csv'}"
          + ("" if a.no_annotate else f" and {Path(a.out) / 'annotated'}/"))
    return 0
