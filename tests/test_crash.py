"""kill -9 during a pipeline run: the next run finishes, reuses finished stages, resumes training
from its last checkpoint, and ends with the results of an uninterrupted run (bench/soak_kill.py
runs the same check for many trials)."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak_kill  # noqa: E402


def test_kill_minus_9_twice_then_identical_results(tmp_path):
    pipeline = soak_kill.write_pipeline(tmp_path)
    ref, duration = soak_kill.reference(pipeline, tmp_path / "ref")
    assert len(ref) == 7
    # one kill during the first training stage, one late in the run
    for i, frac in enumerate((0.35, 0.8)):
        res = soak_kill.trial(pipeline, tmp_path / f"t{i}", ref, frac * duration)
        assert res["ok"], res
