"""kill -9 during a pipeline run, and again during the re-run: the next run finishes, reuses
finished stages, resumes training from its last checkpoint, and ends with the results of an
uninterrupted run (bench/soak_kill.py runs the same check at random moments for many trials)."""

import sys

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
