"""`fer-lightning predict` against the peer `fer` package on the same folder of photos.

Both find faces with OpenCV's Haar cascade and classify each face with a small 48x48 CNN; both
are timed as whole commands (start-up included: what a user waits for), alternating, and the
median photos/s is compared. The photos are scikit-image's astronaut (one face) and coffee (no
face) at several sizes. The `fer` package needs TensorFlow, so it lives in another environment:
pass its Python with ``--fer-python``.

    python bench/predict_vs_fer.py --fer-python /path/to/venv-with-fer/bin/python [--photos 200]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FER_SCRIPT = """
import sys, pathlib, cv2
from fer.fer import FER  # fer 25.x: the class lives in fer.fer
det = FER(mtcnn=False)
faces = 0
for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    faces += len(det.detect_emotions(cv2.imread(str(p))))
print("faces", faces)
"""


def make_photos(folder: Path, n: int):
    import cv2
    from skimage import data

    face, no_face = data.astronaut()[:, :, ::-1], data.coffee()[:, :, ::-1]
    for i in range(n):
        img = no_face if i % 4 == 3 else face
        scale = (0.75, 1.0, 1.5)[i % 3]
        cv2.imwrite(str(folder / f"photo_{i:04d}.jpg"), cv2.resize(img, None, fx=scale, fy=scale))


def make_checkpoint(path: Path):
    """An (untrained) CNN2 checkpoint: speed does not depend on the weights."""
    import lightning as L

    from fer_lightning.models import CNN2
    from fer_lightning.module import ClassifierModule

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    module = ClassifierModule(CNN2())
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


def timed(cmd) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    return time.perf_counter() - t0, p.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fer-python", required=True, help="a Python that can `import fer`")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        make_photos(tmp / "photos", args.photos)
        make_checkpoint(tmp / "cnn2.ckpt")
        (tmp / "fer_batch.py").write_text(FER_SCRIPT)
        ours_cmd = [sys.executable, "-m", "fer_lightning", "predict", "--model", str(tmp / "cnn2.ckpt"),
                    str(tmp / "photos"), "--out", str(tmp / "out"), "--no-annotate", "--device", "cpu"]
        fer_cmd = [args.fer_python, str(tmp / "fer_batch.py"), str(tmp / "photos")]
        timed(ours_cmd), timed(fer_cmd)  # warm-up: file caches, first-import costs
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(timed(ours_cmd)[0])
            t, out = timed(fer_cmd)
            theirs.append(t)
        rows = (tmp / "out" / "predictions.csv").read_text().splitlines()[1:]
        our_faces = sum(1 for r in rows if "no_face" not in r)
        print(f"{args.photos} photos; faces found: ours {our_faces}, fer {out.split()[-1]}")
        ratios = [b / a for a, b in zip(ours, theirs)]
        print(f"fer-lightning predict: median {statistics.median(ours):.1f}s ({args.photos / statistics.median(ours):.1f} photos/s); "
              f"fer: median {statistics.median(theirs):.1f}s ({args.photos / statistics.median(theirs):.1f} photos/s)")
        ok = statistics.median(ratios) >= 1.0
        print(f"predict speed: fer time / our time = {statistics.median(ratios):.2f}x (target >= 1) "
              f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
