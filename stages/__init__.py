"""Stage kinds: one module each, with ``OUTPUTS`` (name -> file in the stage directory),
``run(ctx)`` (ctx: :class:`fer_lightning.pipeline.runner.StageContext`; returns summary metrics)
and optionally ``SHARED`` (which of the pipeline's ``seed``, ``trainer``, ``data`` its config
receives) and ``FILE_PARAMS`` (config keys that name files: their content joins the stage's key)."""

from stages import evaluate, fuse, handcrafted, head, probe, report, score_fusion, train

KINDS = {"train": train, "fuse": fuse, "head": head, "handcrafted": handcrafted, "score_fusion": score_fusion,
         "probe": probe, "report": report, "evaluate": evaluate}
