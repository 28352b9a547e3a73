"""kill -9 during a pipeline run, and again during the re-run: the next run finishes, reuses
finished stages, resumes training from its last checkpoint, and ends with the results of an
uninterrupted run (bench/soak_kill.py runs the same check at random moments for many trials)."""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak_kill  # noqa: E402


def test_kill_minus_9_twice_then_identical_results(tmp_path):
    pipeline = soak_kill.write_pipeline(tmp_path)
    ref, _ = soak_kill.reference(pipeline, tmp_path / "ref")
    assert len(ref) == 7

    def mid_training(out):  # a base CNN has saved an epoch's checkpoint (3 epochs each)
        return any(out.glob("cnn*/checkpoints/last.ckpt"))

    def first_stage_finished(out):  # the others are still training, or not started
        return any(out.glob("*/manifest.json"))

    res = soak_kill.trial(pipeline, tmp_path / "trial", ref, [mid_training, first_stage_finished])
    assert res["killed"] and res["ok"], res
    assert 1 <= res["finished_before_kill"] < 7 and res["resumed_from_checkpoint"] >= 1, res


def test_ctrl_c_is_one_line_and_the_same_command_resumes(tiny_pipeline, tmp_path):
    """SIGINT to the whole process group, as Ctrl-C in a terminal sends it, while the base CNNs
    train in processes of their own: exit status 130, one line instead of a traceback, no stage
    marked done that did not finish, and the same command then completes the run."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fer_lightning", "pipeline", "run", str(tiny_pipeline), "--out", str(out),
           "--jobs", "3", "--threads", "1"]
    # as in a terminal: a test suite started with ``&`` from a script would pass its ignored SIGINT on
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while len(list(out.glob("cnn*/stage.log"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: finished stages are kept" in err and "Traceback" not in err
    assert not list(out.glob("*/manifest.json"))   # nothing had finished; nothing looks finished
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "7 stage(s) run" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_to_the_runner_stops_its_stages_and_says_so(tiny_pipeline, tmp_path, sigint):
    """SIGTERM to the runner alone (``kill PID``, a scheduler's stop, ``timeout``) while the base
    CNNs train in processes of their own: the runner asks them to stop, ends with status 143 and
    one line, and leaves no stage process behind and no stage marked done. The same when the run
    ignores Ctrl-C (``nohup``, or ``&`` in a script, start it with SIGINT ignored)."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fer_lightning", "pipeline", "run", str(tiny_pipeline), "--out", str(out),
           "--jobs", "3", "--threads", "1"]
    sigint_handler = signal.SIG_DFL if sigint == "default" else signal.SIG_IGN
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_handler))
    deadline, stages = time.time() + 120, []
    while len(stages) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        stages = [p for p in os.listdir("/proc") if p.isdigit() and str(out) in _cmdline(p) and "_stage" in _cmdline(p)]
    assert len(stages) == 3
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == ("terminated: finished stages are kept, and the same command "
                                            "resumes the rest") and "Traceback" not in err
    assert not any(_cmdline(p) for p in stages)  # gone, not orphaned
    assert not list(out.glob("*/manifest.json"))


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
