"""Callbacks for the CLI."""

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint

from fer_lightning.artifacts import atomic_save_npz
from fer_lightning.module import collate_predictions


class ProbabilityWriter(BasePredictionWriter):
    """Writes what ``fer-lightning train predict`` computes — class probabilities, last-fc
    features and labels of the data module's ``predict_split`` — to ``output_path`` (.npz).
    A relative path is taken inside the trainer's ``default_root_dir``."""

    def __init__(self, output_path: str = "predictions.npz"):
        super().__init__(write_interval="epoch")
        self.output_path = output_path

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        outs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        path = Path(self.output_path)
        if not path.is_absolute():
            path = Path(trainer.default_root_dir) / path
        arrays = collate_predictions(outs)
        atomic_save_npz(path, **arrays)
        print(f"predictions written to {path} ({len(arrays['labels'])} images)")


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the latest epoch, as before Lightning 2.6.

    Since 2.6, ``save_last=True`` writes ``last.ckpt`` only at a step where a top-k checkpoint was
    saved too. With the product's one best-``val/acc`` checkpoint, ``last.ckpt`` was then the best
    epoch's: an interrupted run resumed from there and trained every epoch since again, and
    ``--ckpt_path last.ckpt`` continued from an older epoch without a word."""

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def _save_last_if_not_saved(self, trainer):
        # skips when this step was saved already (a new best), outside fit, in the sanity check
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
