"""Do independent stages gain from running side by side? And is a cached re-run instant?

Runs the same pipeline from scratch twice through the CLI, one stage after the other (``--jobs 1``)
and as the runner decides (``--jobs auto``), in fresh output directories, then re-runs the second
one fully cached. Prints the wall times, the speed-up, whether ``auto`` chose the faster plan, and
the cached re-run time (target <= 5 s).

    python bench/concurrency.py [--pipeline configs/pipelines/fer2013_fusion_demo.yaml] [--set K=V ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(pipeline: str, out: Path, jobs: str, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "fer_lightning", "pipeline", "run", pipeline, "--out", str(out), "--jobs", jobs]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "FER_WANDB": "off", "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def stage_seconds(out: Path) -> dict:
    return {m.parent.name: json.loads(m.read_text())["timings"]["seconds"] for m in sorted(out.glob("*/manifest.json"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default=str(ROOT / "configs/pipelines/fer2013_fusion_demo.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        seq = run(args.pipeline, Path(tmp) / "seq", "1", args.set)
        auto = run(args.pipeline, Path(tmp) / "auto", "auto", args.set)
        cached = run(args.pipeline, Path(tmp) / "auto", "auto", args.set)
        print(f"stage seconds, one after the other: {stage_seconds(Path(tmp) / 'seq')}")
        print(f"stage seconds, jobs auto:           {stage_seconds(Path(tmp) / 'auto')}")
    cores = len(os.sched_getaffinity(0))
    print(f"{Path(args.pipeline).name}, {cores} cores: jobs 1 {seq:.1f}s, jobs auto {auto:.1f}s")
    ok1, ok2 = auto <= seq * 1.02, cached <= 5.0
    print(f"concurrent stages: jobs-1 time / jobs-auto time = {seq / auto:.2f}x "
          f"(target: auto no slower than one after the other) {'PASS' if ok1 else 'FAIL'}")
    print(f"cache: fully cached re-run {cached:.2f}s (target <= 5 s) {'PASS' if ok2 else 'FAIL'}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
