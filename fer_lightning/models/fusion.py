"""Freeze-and-concatenate fusion: paper 000 §2.1, generalised to N backbones and any head.

Paper 000: trained classifier checkpoints are frozen (no gradients, BN and dropout kept in eval
mode), their last-fc features are concatenated ``x_cat = x_1 || x_2 || ...`` and one linear head
``S = W x_cat + b`` (eq. 1) is trained with softmax / cross-entropy (eqs. 8–9).

Paper 003's three hybrids are the same network with other switches:
  (a) backbones as initialised (``backbone_specs``), frozen      — ``freeze: true``
  (b) backbones as initialised, fine-tuned end to end             — ``freeze: false``
  (c) backbones trained separately (``checkpoints``), then frozen — the ``fuse`` stage
with ``layer: pooled`` (the backbones' pooled features, their classifier heads dropped) and the
paper's head ``hidden: [4096, 1024]``, ``dropout: 0.2``.
"""

import torch
from torch import nn

from fer_lightning.models.cnn import fc_stack


class FusionNet(nn.Module):
    """Backbones (frozen or not) + concatenated features + a trainable head.

    Args:
        checkpoints: paths of checkpoints written by the ``train`` stage (or ``fer-lightning
            train fit``).
        hidden: widths of the head's hidden layers (``Linear → ReLU → Dropout``); ``[]`` (default)
            is paper 000's single linear layer.
        num_classes: number of classes.
        backbone_specs: instead of ``checkpoints``: the backbones' ``class_path``/``init_args``
            (untrained, or initialised from a local ``weights`` file). A saved FusionNet records
            these, not paths, so its checkpoint is self-contained.
        freeze: keep the backbones fixed (no gradients, eval mode); ``false`` fine-tunes them.
        layer: which backbone output to concatenate: ``features`` (the input of their last fc
            layer) or ``pooled`` (the pooled convolutional features, for torchvision backbones).
        dropout: dropout after each hidden layer of the head (one rate, or one per layer).
        input_batchnorm: batch-normalise the concatenated features first (as ``FeatureHead``
            can: the ``head`` stage's image-level export is a FusionNet).
    """

    def __init__(self, checkpoints: list[str] | None = None, hidden: list[int] | None = None,
                 num_classes: int = 7, backbone_specs: list[dict] | None = None, freeze: bool = True,
                 layer: str = "features", dropout: float | list[float] = 0.0, input_batchnorm: bool = False):
        super().__init__()
        # late import: checkpoints imports the models
        from fer_lightning.checkpoints import build_net, load_net, net_spec
        from fer_lightning.errors import UserError

        if checkpoints:
            backbones = [load_net(p) for p in checkpoints]
        elif backbone_specs:
            backbones = [build_net(spec) for spec in backbone_specs]
        else:
            raise ValueError("FusionNet needs backbone checkpoints or backbone_specs")
        if layer not in ("features", "pooled"):
            raise UserError(f"FusionNet.layer: '{layer}' (expected 'features' or 'pooled')")
        for b in backbones:
            if not hasattr(b, layer):
                raise UserError(f"FusionNet.layer: {type(b).__name__} has no '{layer}' output "
                                f"(use layer: features)")
        self.backbones = nn.ModuleList(backbones)
        self.freeze, self.layer = freeze, layer
        if freeze:
            for b in self.backbones:
                b.requires_grad_(False)
                b.eval()
        dims = [b.pooled_dim if layer == "pooled" else b.feature_dim for b in self.backbones]
        width = sum(dims)
        layers, f = fc_stack(width, hidden or [], dropout)
        self.head = nn.Sequential(*([nn.BatchNorm1d(width)] if input_batchnorm else []), *layers)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.init_args = dict(backbone_specs=[net_spec(b) for b in self.backbones],
                              hidden=list(hidden or []), num_classes=num_classes, freeze=freeze,
                              layer=layer, dropout=dropout, input_batchnorm=input_batchnorm)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:  # frozen backbones never leave eval mode
            for b in self.backbones:
                b.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            cat = torch.cat([getattr(b, self.layer)(x) for b in self.backbones], dim=1)
        return self.head(cat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
