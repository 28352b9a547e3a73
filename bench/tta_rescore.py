"""Re-score finished networks under another test-time augmentation and keep the scores, in the
format of ``bench/keep_probs.py``: a network's TTA is fixed when its stage exports (``model.tta``),
and changing it in the config would retrain the stage; this scores the stage's checkpoint instead.

    python bench/tta_rescore.py runs/x/vgg_sgd --data fer2013.csv.gz --tta flip_crops \
        --to results/<folder>    # -> <folder>/vgg_sgd_flip_crops.npz and .json

Only PublicTest and PrivateTest are scored: enough to choose the TTA on PublicTest and to fuse
the file as a ``members`` input of ``fer2013_kept.yaml``, not to teach from it. The choice between
a network's TTAs must be made on PublicTest (the ``.json`` holds both splits' scores).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from fer_lightning.artifacts import atomic_write_bytes, atomic_write_json
from fer_lightning.checkpoints import load_net
from fer_lightning.data import FER2013DataModule
from fer_lightning.evaluate import device_arg, predict_probs
from fer_lightning.metrics import score
from fer_lightning.tta import TTA_MODES

sys.path.insert(0, str(Path(__file__).parent))
from keep_probs import slim  # noqa: E402  (the same float16, compressed .npz)

SPLITS = ("public_test", "private_test")


def read_test_splits(data: str) -> dict:
    """``{split: (uint8 faces, labels)}`` of PublicTest and PrivateTest, read once for every network."""
    dm = FER2013DataModule(data, val_split="PublicTest")  # no holdout cut: only the test splits are read
    return {split: dm.split(split) for split in SPLITS}


def target_path(stage_dir: Path, tta: str, to: Path) -> Path:
    return to / f"{stage_dir.name}_{tta}.npz"


def refuse_existing(target: Path) -> None:
    if target.exists():  # never overwrites what was kept
        sys.exit(f"{target} exists: give each run its own --to folder")


def rescore(stage_dir: Path, splits: dict, tta: str, to: Path, device: str = "cpu") -> Path:
    target = target_path(stage_dir, tta, to)
    refuse_existing(target)
    net = load_net(str(stage_dir / "model.ckpt"))
    arrays, metrics = {}, {"tta": tta, "model": str(stage_dir / "model.ckpt")}
    for split, (x, y) in splits.items():
        start = time.perf_counter()
        p = predict_probs([net], x, tta=tta, device=device)
        y = y.numpy()
        arrays[f"{split}_probs"], arrays[f"{split}_labels"] = p, y
        metrics[split] = score(p, y, p.shape[1])
        print(f"{stage_dir} [{split}, tta {tta}]: acc {100 * metrics[split]['acc']:.2f} %, "
              f"macro F1 {100 * metrics[split]['f1']:.2f} % ({time.perf_counter() - start:.0f} s)")
    to.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, slim(arrays, no_train=True))
    atomic_write_json(target.with_suffix(".json"), metrics)
    return target


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+", type=Path, help="finished train stages' folders (holding model.ckpt)")
    ap.add_argument("--data", required=True, help="the FER2013 CSV the networks were trained on")
    ap.add_argument("--tta", required=True, choices=TTA_MODES)
    ap.add_argument("--to", type=Path, required=True, help="folder for the kept files")
    ap.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-existing", action="store_true", help="leave out networks already scored in --to")
    args = ap.parse_args()
    stages = [st for st in args.stages if not (args.skip_existing and target_path(st, args.tta, args.to).exists())]
    for stage in stages:  # every problem before the first network is scored, none half-way
        if not (stage / "model.ckpt").is_file():
            sys.exit(f"{stage}: no model.ckpt (give a finished train stage's folder)")
        refuse_existing(target_path(stage, args.tta, args.to))
    splits = read_test_splits(args.data) if stages else {}
    for stage in stages:
        print(f"-> {rescore(stage, splits, args.tta, args.to, args.device)}")
