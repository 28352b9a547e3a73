"""Stage kinds: one module each, with ``OUTPUTS`` (name -> file in the stage directory) and
``run(ctx)`` (ctx: :class:`fer_lightning.pipeline.runner.StageContext`; returns summary metrics)."""

from stages import fuse, probe, report, score_fusion, train

KINDS = {"train": train, "fuse": fuse, "score_fusion": score_fusion, "probe": probe, "report": report}
