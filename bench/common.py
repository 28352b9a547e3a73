"""What the pipeline benchmarks share: run the CLI on a pipeline and read its stage timings."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline_cli(pipeline, out: Path, args: list[str]) -> float:
    """Wall seconds of ``fer-lightning pipeline run PIPELINE --out OUT ARGS`` (W&B off); exits on failure."""
    cmd = [sys.executable, "-m", "fer_lightning", "pipeline", "run", str(pipeline), "--out", str(out), *args]
    env = {**os.environ, "FER_WANDB": "off", "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def _timings(out: Path) -> dict:
    """``{stage: manifest timings}`` of a run's finished stages."""
    return {m.parent.name: json.loads(m.read_text())["timings"] for m in sorted(out.glob("*/manifest.json"))}


def stage_seconds(out: Path) -> dict:
    """``{stage: seconds}`` from the manifests of a finished run."""
    return {name: t["seconds"] for name, t in _timings(out).items()}


def dag_wall_seconds(out: Path) -> float:
    """From the first stage's start to the last one's end, over the stages that ran last (a
    cached stage keeps the times of the run that made it)."""
    from datetime import datetime

    spans = [(start := datetime.fromisoformat(t["started"]).timestamp(), start + t["seconds"])
             for t in _timings(out).values()]
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
