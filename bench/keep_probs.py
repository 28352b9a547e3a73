"""Keep a finished run's class probabilities in the repository, so that later sessions can fuse
networks trained in different GPU leases (score fusion) or distil from them, without the
checkpoints (which stay on the lent machine) or the session's ``runs/`` folder (which does not
outlive the session).

    python bench/keep_probs.py RUN_DIR... --to results/2026-11-26_h200

For every ``<stage>/probs.npz`` of a finished network (a ``train``, ``head`` or ``fuse`` stage)
under each RUN_DIR (a pipeline's ``--out`` folder, e.g. one unpacked from a lease's
``<step>_run.tgz``) it writes ``<to>/<stage>.npz``: the same arrays, probabilities as float16 (half
the bytes; ``load_npz`` reads them back as float32), compressed, without FER2013's ``test`` split
(PublicTest and PrivateTest again, one after the other: ``load_npz`` rebuilds it) and without a
``val`` split that repeats PublicTest (as in the FER2013 recipes; ``load_npz`` restores it from
PublicTest); and ``<to>/<stage>.json``, the
stage's ``metrics.json``. A kept file is a valid ``members`` / ``teacher`` input of a pipeline.

``--no-train`` leaves out the training split's scores (two thirds of the bytes): enough to score
and fuse the network on the test splits, not to teach from it. What travels to a lent GPU (the
repository with results/, and the 55 MB FER2013 pack) must stay under 64 MiB.

    python bench/keep_probs.py --no-train results/<folder>/<stage>.npz    # slim a kept file in place
"""

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from fer_lightning.artifacts import VAL_COPY_OF, atomic_write_bytes, fer2013_test_split, load_npz


def slim(arrays: dict, no_train: bool) -> bytes:
    """The arrays as a compressed .npz: probabilities as float16, without FER2013's ``test`` split
    (a copy of PublicTest and PrivateTest) or a ``val`` split that is a copy of PublicTest (named in
    ``val_copy_of`` instead), and without the training split's with ``no_train``."""
    if no_train:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("train_")}
    rebuilt = fer2013_test_split(arrays)  # what load_npz makes of a file without `test`
    if rebuilt and all(np.array_equal(arrays.get(k), v) for k, v in rebuilt.items()):
        arrays = {k: v for k, v in arrays.items() if not k.startswith("test_")}
    if "val_probs" in arrays and all(np.array_equal(arrays[f"val_{k}"], arrays.get(f"public_test_{k}"))
                                     for k in ("probs", "labels")):  # validated on PublicTest
        arrays = {k: v for k, v in arrays.items() if not k.startswith("val_")}
        arrays[VAL_COPY_OF] = np.array("public_test")
    arrays = {k: v.astype(np.float16) if k.endswith("_probs") else v for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def keep(run_dirs, to: Path, no_train: bool = False) -> list[Path]:
    to.mkdir(parents=True, exist_ok=True)
    kept = []
    for run in map(Path, run_dirs):
        if run.suffix == ".npz":  # a kept file: slim it in place
            before = run.stat().st_size
            atomic_write_bytes(run, slim(load_npz(run), no_train))
            print(f"{run}: {before / 1e6:.2f} -> {run.stat().st_size / 1e6:.2f} MB")
            kept.append(run)
            continue
        for probs in sorted(run.glob("*/probs.npz")):
            stage = probs.parent
            manifest = stage / "manifest.json"  # written when the stage finished
            kind = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
            if kind not in ("train", "head", "fuse"):
                continue  # unfinished, or score fusion (which re-makes its probabilities from the members')
            target = to / f"{stage.name}.npz"
            if target.exists():
                sys.exit(f"{target} exists: give each run its own --to folder")
            atomic_write_bytes(target, slim(load_npz(probs), no_train))
            atomic_write_bytes(to / f"{stage.name}.json", (stage / "metrics.json").read_bytes())
            kept.append(target)
            print(f"{probs} -> {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return kept


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="pipeline output folders (--out of `pipeline run`), or kept .npz files")
    ap.add_argument("--to", type=Path, help="folder for the kept files, e.g. results/<date>_<device>")
    ap.add_argument("--no-train", action="store_true", help="leave out the training split's scores")
    args = ap.parse_args()
    if args.to is None and not all(r.endswith(".npz") for r in args.runs):
        ap.error("--to is needed to keep a run folder's networks")
    if not keep(args.runs, args.to or Path("."), args.no_train):
        sys.exit(f"no finished network's probs.npz under {', '.join(args.runs)}")
