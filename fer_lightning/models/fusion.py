"""The fusion network of paper 000 §2.1, generalised to N backbones.

Loads trained classifier checkpoints, freezes them (no gradients, BN and dropout kept in eval
mode), concatenates their last-fc features ``x_cat = x_1 || x_2 || ...`` and trains one linear
head ``S = W x_cat + b`` (eq. 1) with softmax / cross-entropy (eqs. 8–9).
"""

import torch
from torch import nn


class FusionNet(nn.Module):
    """Frozen backbones from ``checkpoints`` + a trainable head.

    Args:
        checkpoints: paths of checkpoints written by the ``train`` stage (or ``fer-lightning
            train fit``).
        hidden: widths of optional hidden layers of the head; ``[]`` (default) is the paper's
            single linear layer.
        num_classes: number of classes.
        backbone_specs: instead of ``checkpoints``: the backbones' ``class_path``/``init_args``,
            untrained. A saved FusionNet records these, not paths, so its checkpoint is
            self-contained (the backbone weights are in its state dict).
    """

    def __init__(self, checkpoints: list[str] | None = None, hidden: list[int] | None = None,
                 num_classes: int = 7, backbone_specs: list[dict] | None = None):
        super().__init__()
        # late import: checkpoints imports the models
        from fer_lightning.checkpoints import build_net, load_net, net_spec

        if checkpoints:
            backbones = [load_net(p) for p in checkpoints]
        elif backbone_specs:
            backbones = [build_net(spec) for spec in backbone_specs]
        else:
            raise ValueError("FusionNet needs backbone checkpoints")
        self.backbones = nn.ModuleList(backbones)
        for b in self.backbones:
            b.requires_grad_(False)
            b.eval()
        self.feature_dim = sum(b.feature_dim for b in self.backbones)
        layers, f = [], self.feature_dim
        for w in hidden or []:
            layers += [nn.Linear(f, w), nn.ReLU(inplace=True)]
            f = w
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(f, num_classes)
        self.init_args = dict(backbone_specs=[net_spec(b) for b in self.backbones],
                              hidden=list(hidden or []), num_classes=num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        for b in self.backbones:  # frozen backbones never leave eval mode
            b.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cat = torch.cat([b.features(x) for b in self.backbones], dim=1)
        return self.head(cat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
