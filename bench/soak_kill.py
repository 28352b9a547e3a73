"""Crash soak: kill -9 a pipeline run at random moments, re-run it, and check that nothing is lost.

Each trial starts the pipeline in a fresh directory, kills the whole process group with SIGKILL
after a random delay, records which stages had finished (manifest present), then re-runs to the end
and checks that (a) every stage finished before the kill was reused, not re-run, and (b) every
stage's metrics and output hashes equal those of an uninterrupted reference run with the same seed.

    python bench/soak_kill.py --trials 10            # prints one line per trial and a summary
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOAK_PIPELINE = """
base: {demo}
name: soak
data:
  class_path: fer_lightning.data.SyntheticFacesDataModule
  init_args: {{num_train: 560, num_val: 140, num_test: 140, batch_size: 70}}
trainer: {{max_epochs: 3, enable_model_summary: false}}
stages:
  cnn1: {{params: {{model: {{net: {{init_args: {{widths: [8, 8, 16, 16, 16], fc: [16, 8, 8]}}}}}}}}}}
  cnn2: {{params: {{model: {{net: {{init_args: {{widths: [8, 8, 16, 16], fc: [16, 8]}}}}}}}}}}
  cnn3: {{params: {{model: {{net: {{init_args: {{widths: [8, 8, 8, 16, 16, 16], fc: 16}}}}}}}}}}
  fusion: {{params: {{trainer: {{max_epochs: 2}}}}}}
"""


def _cmd(pipeline: Path, out: Path):
    return [sys.executable, "-m", "fer_lightning", "pipeline", "run", str(pipeline), "--out", str(out)]


def _env():
    return {**os.environ, "FER_WANDB": "off", "OMP_WAIT_POLICY": "PASSIVE"}


def _snapshot(out: Path) -> dict:
    """{stage: (metrics, output hashes)} of every finished stage."""
    snap = {}
    for m in sorted(out.glob("*/manifest.json")):
        d = json.loads(m.read_text())
        snap[d["stage"]] = (d["metrics"], {k: v["sha256"] for k, v in d["outputs"].items()})
    return snap


def write_pipeline(directory: Path) -> Path:
    path = directory / "soak.yaml"
    path.write_text(SOAK_PIPELINE.format(demo=ROOT / "configs" / "pipelines" / "fer2013_fusion_demo.yaml"))
    return path


def reference(pipeline: Path, out: Path) -> tuple[dict, float]:
    t0 = time.time()
    subprocess.run(_cmd(pipeline, out), cwd=ROOT, env=_env(), check=True, capture_output=True)
    return _snapshot(out), time.time() - t0


def trial(pipeline: Path, out: Path, ref: dict, kill_after: float) -> dict:
    p = subprocess.Popen(_cmd(pipeline, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.wait(timeout=kill_after)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        killed = True
    finished_before = _snapshot(out)
    r = subprocess.run(_cmd(pipeline, out), cwd=ROOT, env=_env(), capture_output=True, text=True)
    after = _snapshot(out)
    log = r.stdout + r.stderr
    rerun_finished = [s for s in finished_before if f"[run]    {s} " in log]
    mismatched = [s for s in ref if after.get(s) != ref[s]]
    return {"kill_after_s": round(kill_after, 1), "killed": killed, "finished_before_kill": len(finished_before),
            "resumed_from_checkpoint": log.count("resuming from"), "exit_code": r.returncode,
            "finished_stages_rerun": rerun_finished, "stages_differing_from_reference": mismatched,
            "ok": r.returncode == 0 and not rerun_finished and not mismatched}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="runs/soak")
    args = ap.parse_args(argv)
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pipeline = write_pipeline(work)
    import shutil

    shutil.rmtree(work / "reference", ignore_errors=True)
    ref, duration = reference(pipeline, work / "reference")
    print(f"reference run: {len(ref)} stages in {duration:.1f}s")
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        out = work / f"trial{i}"
        shutil.rmtree(out, ignore_errors=True)
        res = trial(pipeline, out, ref, rng.uniform(0.05, 0.85) * duration)
        results.append(res)
        print(f"trial {i}: " + json.dumps(res))
    failures = sum(not r["ok"] for r in results)
    print(f"SUMMARY trials={len(results)} killed={sum(r['killed'] for r in results)} failures={failures} "
          f"finished_stages_lost={sum(len(r['finished_stages_rerun']) for r in results)} "
          f"resumed_from_checkpoint={sum(r['resumed_from_checkpoint'] for r in results)} "
          f"results_differing={sum(bool(r['stages_differing_from_reference']) for r in results)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
