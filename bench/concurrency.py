"""Do independent stages gain from running side by side? And is a cached re-run instant?

Runs the same pipeline from scratch twice through the CLI, one stage after the other (``--jobs 1``)
and as the runner decides (``--jobs auto``), in fresh output directories, then re-runs the second
one fully cached. Prints the wall times, the speed-up, whether ``auto`` chose the faster plan, and
the cached re-run time (target <= 5 s).

    python bench/concurrency.py [--pipeline configs/pipelines/fer2013_fusion_demo.yaml] [--set K=V ...]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import ROOT, run_pipeline_cli, stage_seconds


def run(pipeline: str, out: Path, jobs: str, sets: list[str]) -> float:
    return run_pipeline_cli(pipeline, out, ["--jobs", jobs] + [f"--set={s}" for s in sets])


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
