"""``fer-lightning pipeline {run,plan} FILE``."""

import argparse
import os

from fer_lightning import at_least_one
from fer_lightning.pipeline.runner import run_pipeline
from fer_lightning.pipeline.spec import load_pipeline


def pipeline_main(argv) -> int:
    ap = argparse.ArgumentParser(prog="fer-lightning pipeline",
                                 description="Run a stage DAG, skipping stages whose inputs did not change.")
    ap.add_argument("action", choices=["run", "plan"], help="plan = dry run: print what would run and why")
    ap.add_argument("file", help="pipeline YAML, e.g. configs/pipelines/fer2013_fusion.yaml")
    ap.add_argument("--out", help="output directory (default: runs/<pipeline name>)")
    ap.add_argument("--data", help="dataset: a FER2013 .csv/.csv.gz, a JAFFE folder, an image folder, or 'synthetic'")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a value of the pipeline file, e.g. trainer.max_epochs=2 or "
                         "stages.probe.params.classifiers.knn.init_args.n_neighbors=7; a number indexes a list, "
                         "e.g. stages.report.params.splits.0=public_test (repeatable)")
    ap.add_argument("--only", action="append", default=[], metavar="STAGE",
                    help="run only this stage (repeatable); its inputs must already be finished")
    ap.add_argument("--from", dest="from_stage", metavar="STAGE",
                    help="re-run this stage and everything downstream of it")
    ap.add_argument("--force", action="store_true", help="re-run every stage")
    ap.add_argument("--jobs", help="independent stages run at once: 'auto' (default: one per GPU when "
                    "there are several, up to 3 on one GPU, on the CPU the DAG's width, at most cores + 1) "
                    "or a number; 1 = one after the other")
    ap.add_argument("--threads", type=at_least_one, help="torch CPU threads per stage (default: the cores "
                    "divided among the stages that run at once)")
    args = ap.parse_args(argv)
    pipe = load_pipeline(args.file, sets=args.set, data=args.data)
    out = args.out or os.path.join("runs", pipe.name)
    run_pipeline(pipe, out, only=args.only, from_stage=args.from_stage, force=args.force,
                 dry_run=args.action == "plan", jobs=args.jobs or pipe.jobs or "auto", threads=args.threads)
    return 0
