"""Saved feature vectors as a dataset: the input of the ``head`` stage.

Each file is a ``features.npz`` artifact (``<split>_features``, ``<split>_labels``, and for
torchvision backbones ``<split>_pooled``) written by the ``train``/``fuse``/``handcrafted``
stages. The vectors of several files are concatenated per split; their labels must agree (same
data, same split), which is checked, not assumed.
"""

import torch

from fer_lightning.artifacts import load_npz
from fer_lightning.data.base import TensorDataModule
from fer_lightning.errors import UserError


class FeaturesDataModule(TensorDataModule):
    """Concatenated feature vectors from ``paths``.

    Args:
        paths: ``features.npz`` files (the ``head`` stage fills them in from its inputs).
        keys: per file, which vectors to take: ``features`` (default) or ``pooled``; one value
            applies to every file.
        batch_size, eval_batch_size, seed: as for every data module.
    """

    def __init__(self, paths: list[str] | None = None, keys: list[str] | str = "features",
                 batch_size: int = 64, eval_batch_size: int = 4096, seed: int = 0):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=None, seed=seed)
        if not paths:
            raise UserError("data.init_args.paths: list the features.npz files to train on")
        self.paths = list(paths)
        self.keys = [keys] * len(self.paths) if isinstance(keys, str) else list(keys)
        if len(self.keys) != len(self.paths):
            raise UserError(f"data.init_args.keys: {len(self.keys)} keys for {len(self.paths)} files")

    def load_splits(self):
        files = [load_npz(p) for p in self.paths]
        names = [k[: -len("_labels")] for k in files[0] if k.endswith("_labels")]
        splits = {}
        for split in names:
            parts, labels = [], None
            for path, z, key in zip(self.paths, files, self.keys):
                if f"{split}_{key}" not in z:
                    if split in ("train", "val", "test"):
                        raise UserError(f"{path}: no '{split}_{key}' array (has {', '.join(sorted(z))})")
                    break
                y = torch.from_numpy(z[f"{split}_labels"]).long()
                if labels is not None and not torch.equal(labels, y):
                    raise UserError(f"{path}: the '{split}' labels differ from those of {self.paths[0]} "
                                    f"(features made from different data or splits?)")
                labels = y
                parts.append(torch.from_numpy(z[f"{split}_{key}"]).float().flatten(1))
            else:
                splits[split] = (torch.cat(parts, dim=1), labels)
        self.eval_splits = tuple(splits)
        return splits

    @property
    def feature_dim(self) -> int:
        return self.split("train")[0].shape[1]

    def batch_input(self, x, train):
        return x.float()
