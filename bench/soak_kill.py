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
import re
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


def _run_logged(pipeline: Path, out: Path, log_path: Path, kill) -> tuple[int, bool, str]:
    """One run of the pipeline, SIGKILLed (its whole process group) once ``kill`` holds: a number
    of seconds, or a function of the output folder (e.g. "a checkpoint exists"), or None (never).
    Returns (exit code, killed, its output)."""
    t0 = time.time()
    with open(log_path, "w") as log_file:
        p = subprocess.Popen(_cmd(pipeline, out), cwd=ROOT, env=_env(), stdout=log_file,
                             stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        while p.poll() is None:
            if kill is not None and (kill(out) if callable(kill) else time.time() - t0 >= kill):
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                killed = True
                break
            time.sleep(0.05)
    return p.returncode, killed, log_path.read_text()


def trial(pipeline: Path, out: Path, ref: dict, kill_after) -> dict:
    """Run the pipeline and SIGKILL it once ``kill_after`` holds (seconds or a function of the
    output folder; a list: one kill per entry, each hitting the re-run of the one before), then
    re-run it to the end and compare with ``ref``. A stage finished before a run started must not
    run again in it."""
    kills = kill_after if isinstance(kill_after, list) else [kill_after]
    killed, rerun_finished = [], []
    for i, kill in enumerate([*kills, None]):
        finished_before = _snapshot(out)
        code, was_killed, log = _run_logged(pipeline, out, out.with_name(f"{out.name}.run{i}.log"), kill)
        killed.append(was_killed)
        rerun_finished += [s for s in finished_before if f"[run]    {s} " in log]
    after = _snapshot(out)
    mismatched = [s for s in ref if after.get(s) != ref[s]]
    # a training stage says so when it resumes, in the runner's output or (in its own process) in
    # its stage.log, which holds the run that finished it
    stage_logs = "".join(f.read_text(errors="replace") for f in out.glob("*/stage.log"))
    resumed = set(re.findall(r"^\[(\S+)\] resuming from", log + stage_logs, re.MULTILINE))
    shown = [k.__name__ if callable(k) else round(k, 1) for k in kills]
    return {"kill_after_s": shown if len(shown) > 1 else shown[0],
            "killed": all(killed[:-1]), "finished_before_kill": len(finished_before),
            "resumed_from_checkpoint": len(resumed), "exit_code": code,
            "finished_stages_rerun": rerun_finished, "stages_differing_from_reference": mismatched,
            "ok": code == 0 and not rerun_finished and not mismatched}


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
