"""The LightningCLI behind ``fer-lightning train`` and the training stages."""

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningCLI

from fer_lightning.callbacks import ProbabilityWriter, ResumableCheckpoint
from fer_lightning.data.base import TensorDataModule
from fer_lightning.errors import InvalidConfigValue
from fer_lightning.module import ClassifierModule
from fer_lightning.tracking import make_logger


def strict_yaml_load(text: str):
    """jsonargparse's YAML loader after a check that no key is given twice: PyYAML keeps the
    last silently, so a second ``trainer:`` block in one file would replace the first."""
    import yaml
    from jsonargparse import get_loader

    from fer_lightning.config import StrictLoader

    yaml.load(text, Loader=StrictLoader)  # raises a YAMLError, which jsonargparse reports
    return get_loader("yaml")(text)


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86 ``avx512_bf16`` or ``amx_bf16``); None where
    /proc/cpuinfo does not say."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Trainer(L.Trainer):
    """Lightning's Trainer with ``limit_*_batches`` typed ``int | float`` instead of ``float | int``.
    The CLI tries a union's types in order, so with Lightning's order ``limit_train_batches: 1``
    became 1.0 — the whole epoch — where in Python ``1`` means one batch; now it is one batch
    here too, and ``0.5`` (or ``1.0``) is still a fraction."""

    def __init__(self, *, limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None, limit_predict_batches: int | float | None = None,
                 **kwargs):
        """
        Args:
            limit_train_batches: how much of the training set an epoch uses: an int, that many
                batches (1: one batch); a float, that fraction (1.0: all). Default: all.
            limit_val_batches: the same for each validation.
            limit_test_batches: the same for testing.
            limit_predict_batches: the same for prediction.
        """
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
                         **kwargs)


class FERLightningCLI(LightningCLI):
    """LightningCLI with the product's defaults: a best-``val/acc`` checkpoint (plus ``last``, the
    latest epoch), ``predict`` writing ``predictions.npz``, seed 0, and W&B (offline) as the default
    logger."""

    def __init__(self, *args, logger=None, **kwargs):
        self._logger = logger
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        import yaml
        from jsonargparse import set_loader

        set_loader("yaml_strict", strict_yaml_load, exceptions=(yaml.YAMLError,))
        kwargs["parser_kwargs"] = {"parser_mode": "yaml_strict", "prog": "fer-lightning train",
                                   **kwargs.get("parser_kwargs", {})}
        super().__init__(ClassifierModule, TensorDataModule, *args, subclass_mode_data=True, trainer_class=Trainer,
                         **kwargs)

    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ProbabilityWriter, "prediction_writer")
        parser.set_defaults({"checkpoint.monitor": "val/acc", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best"})

    def instantiate_classes(self):
        # The model's and data module's checks of their arguments raise ValueError (model.ema_decay
        # 1.5, model.steps_per_execution 0, ...): a one-line error, not a traceback.
        try:
            super().instantiate_classes()
        except ValueError as e:
            raise InvalidConfigValue(str(e)) from None

    def instantiate_trainer(self, **kwargs):
        cfg = self._get(self.config_init, "trainer", default={})
        if "logger" not in kwargs and cfg.get("logger") in (None, True):
            kwargs["logger"] = self._logger or make_logger(cfg.get("default_root_dir") or ".")
        trainer = super().instantiate_trainer(**kwargs)
        if isinstance(trainer.accelerator, CPUAccelerator) and str(trainer.precision).startswith("bf16") \
                and cpu_has_bf16() is False:
            # with avx512_bf16, bf16 autocast trained the CPU recipe's VGG 1.4-1.6x faster per epoch;
            # without, an earlier machine of this project ran it at 0.09x (README, Performance)
            print(f"warning: trainer.precision {trainer.precision} on a CPU without bfloat16 instructions "
                  f"(avx512_bf16, amx_bf16) can be many times slower than 32-true", file=sys.stderr)
        return trainer


class ParseOnlyCLI(FERLightningCLI):
    """Parses and validates a config (keys, types, class paths and their arguments) and builds
    nothing: no seeding, no model, data module or trainer. The parser is built once per process
    and reused: building it costs as much as a parse, and a pipeline's plan checks dozens of
    stages (jaffe_from_fer2013_loso.yaml: 43)."""

    _parsers: dict = {}

    def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs):
        key = repr((add_subcommands, main_kwargs, subparser_kwargs))
        if key not in self._parsers:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            self._parsers[key] = self.parser
        self.parser = self._parsers[key]

    def _set_seed(self):
        pass

    def instantiate_classes(self):
        pass
