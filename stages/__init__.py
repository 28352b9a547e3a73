"""Stage kinds: one module each, with ``OUTPUTS`` (name -> file in the stage directory),
``run(ctx)`` (ctx: :class:`fer_lightning.pipeline.processes.StageContext`; returns summary metrics)
and optionally ``SHARED`` (which of the pipeline's ``seed``, ``trainer``, ``data`` its config
receives), ``PARAMS`` (the keys its params may hold, for kinds whose config is not a LightningCLI
config: any other key is an error), ``FILE_PARAMS`` (config keys that name files: their content
joins the stage's key) and
``DATASET_PARAMS`` (params that describe the pipeline file's dataset: ``--data`` with another kind of
dataset drops them), ``check(name, config, inputs)`` (raises UserError for a bad config; the runner calls it for every
stage that may run before the first one starts, with inputs still as ``<stage>.<output>`` refs) and
``prepare_data(name, config, seen)`` (reads the stage's data once, in the runner, after the checks;
``seen`` holds the data configs already prepared)."""

from stages import evaluate, fuse, handcrafted, head, probe, report, score_fusion, train

KINDS = {"train": train, "fuse": fuse, "head": head, "handcrafted": handcrafted, "score_fusion": score_fusion,
         "probe": probe, "report": report, "evaluate": evaluate}
