"""Callbacks for the CLI."""

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

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
