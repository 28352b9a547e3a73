"""``fer-lightning``: one command for single stages (LightningCLI) and whole pipelines.

    fer-lightning train {fit,validate,test,predict} --config a.yaml [--config b.yaml] [--key value]
    fer-lightning pipeline {run,plan} configs/pipelines/<name>.yaml [options]
    fer-lightning evaluate --model model.ckpt [--model ...] --data PATH [--split S] [--tta flip|flip_crops|flip_crops_rotate_zoom|...]
    fer-lightning predict --model model.ckpt [--model ...] photo.jpg|folder ... [--out DIR]
    fer-lightning --version
"""

import signal
import sys

from fer_lightning.errors import DISK_ERRNOS, UserError

# Lightning is imported only by `train`: `pipeline` commands on a cached run start in well under
# a second.


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] in ("-V", "--version"):
        from fer_lightning import __version__

        print(f"fer-lightning {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            import warnings

            from lightning.fabric.utilities.exceptions import MisconfigurationException

            from fer_lightning.train_cli import FERLightningCLI

            # `args` is this command's share of sys.argv, which Lightning cannot tell from a mistake
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            try:
                FERLightningCLI(args=rest)
            except MisconfigurationException as e:  # e.g. accelerator gpu on a machine without one
                hint = " (--trainer.accelerator auto runs on what this machine has)" if "gpu" in str(e).lower() else ""
                raise UserError(f"trainer: {e}{hint}") from None
            return 0
        if command == "pipeline":
            from fer_lightning.pipeline.cli import pipeline_main

            return pipeline_main(rest)
        if command == "evaluate":
            from fer_lightning.evaluate import main as evaluate_main

            return evaluate_main(rest)
        if command == "predict":
            from fer_lightning.photos import main as predict_main

            return predict_main(rest)
        if command == "_stage":  # internal: one stage in its own process (multi-process DDP)
            from fer_lightning.pipeline.processes import run_stage_job

            return run_stage_job(rest[0])
        print(f"error: unknown command '{command}' (expected train, pipeline, evaluate or predict)", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        # a full disk or a read-only folder while writing outputs (a pipeline's stages say which stage)
        print(f"error: cannot write {e.filename or 'an output'}: {e.strerror}; free space or fix permissions, "
              f"then re-run", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: a line, not a traceback; nothing unfinished is marked done
        signum = getattr(e, "signum", signal.SIGINT)  # the runner's Interrupted says which
        print(("terminated" if signum == signal.SIGTERM else "interrupted")
              + (": finished stages are kept, and the same command resumes the rest" if command == "pipeline" else ""),
              file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
