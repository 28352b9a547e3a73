"""Keep a finished run's class probabilities in the repository, so that later sessions can fuse
networks trained in different GPU leases (score fusion) or distil from them, without the
checkpoints (which stay on the lent machine) or the session's ``runs/`` folder (which does not
outlive the session).

    python bench/keep_probs.py RUN_DIR... --to results/2026-11-26_h200

For every ``<stage>/probs.npz`` of a finished network (a ``train``, ``head`` or ``fuse`` stage)
under each RUN_DIR (a pipeline's ``--out`` folder, e.g. one unpacked from a lease's
``<step>_run.tgz``) it writes ``<to>/<stage>.npz``: the same arrays, probabilities as float16 (half
the bytes; ``load_npz`` reads them back as float32), compressed; and ``<to>/<stage>.json``, the
stage's ``metrics.json``. A kept file is a valid ``members`` / ``teacher`` input of a pipeline.
"""

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from fer_lightning.artifacts import atomic_write_bytes, load_npz


def keep(run_dirs, to: Path) -> list[Path]:
    to.mkdir(parents=True, exist_ok=True)
    kept = []
    for run in map(Path, run_dirs):
        for probs in sorted(run.glob("*/probs.npz")):
            stage = probs.parent
            manifest = stage / "manifest.json"  # written when the stage finished
            kind = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
            if kind not in ("train", "head", "fuse"):
                continue  # unfinished, or score fusion (which re-makes its probabilities from the members')
            target = to / f"{stage.name}.npz"
            if target.exists():
                sys.exit(f"{target} exists: give each run its own --to folder")
            arrays = {k: v.astype(np.float16) if k.endswith("_probs") else v for k, v in load_npz(probs).items()}
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            atomic_write_bytes(target, buf.getvalue())
            atomic_write_bytes(to / f"{stage.name}.json", (stage / "metrics.json").read_bytes())
            kept.append(target)
            print(f"{probs} -> {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return kept


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="pipeline output folders (--out of `pipeline run`)")
    ap.add_argument("--to", required=True, type=Path, help="folder for the kept files, e.g. results/<date>_<device>")
    args = ap.parse_args()
    if not keep(args.runs, args.to):
        sys.exit(f"no finished network's probs.npz under {', '.join(args.runs)}")
