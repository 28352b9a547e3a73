"""The three base CNNs of paper 000 (Ahmed et al., "A Multi-CNN Fusion Approach ..."), §2 / Fig. 1.

The paper fixes the layer recipe — how many conv and fc layers, and which of BN, ReLU,
max-pooling and dropout follow each — and leaves widths, kernels and dropout rates open. Our
choices, kept small so that the whole DAG trains on a 2-core CPU:

- every conv is 3×3, stride 1, padding 1; every max-pool is 2×2;
- conv dropout 0.25, fc dropout 0.5 (the usual rates of Keras FER2013 baselines);
- widths: CNN1 32-64-128-128-256 | fc 256-128-64; CNN2 32-64-128-256 | fc 256-128;
  CNN3 32-32-64-128-128-256 | fc 256.

Every model has ``features(x)`` (the input of the last fc layer, the "last-fc features" used by
the fusion network and the SVM/KNN probes), ``classifier`` (the last fc layer), ``feature_dim``
and ``init_args`` (to rebuild it from a checkpoint).
"""

import torch
from torch import nn


def conv_block(cin: int, cout: int, pool: bool, dropout: float) -> list[nn.Module]:
    """conv → BN → ReLU [→ max-pool → dropout]."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    return layers


def fc_block(fin: int, fout: int, bn: bool, dropout: float) -> list[nn.Module]:
    """fc [→ BN] → ReLU [→ dropout]."""
    layers = [nn.Linear(fin, fout, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(fout))
    layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class FERNet(nn.Module):
    """A feature extractor followed by one linear classifier."""

    def __init__(self, features: nn.Sequential, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def fc_stack(fin: int, widths, dropout=0.0, bn: bool = False) -> tuple[list[nn.Module], int]:
    """One :func:`fc_block` per hidden width; ``dropout`` is one rate or one per layer. Returns
    the layers and the output width — the MLP heads of every model here."""
    rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(widths)
    if len(rates) != len(widths):
        raise ValueError(f"{len(rates)} dropout rates for {len(widths)} hidden layers")
    layers, f = [], fin
    for w, p in zip(widths, rates):
        layers += fc_block(f, w, bn=bn, dropout=p)
        f = w
    return layers, f


def _side_after_pools(image_size: int, pools: int) -> int:
    for _ in range(pools):
        image_size //= 2
    if image_size < 1:
        raise ValueError(f"image_size too small for {pools} 2×2 max-pools")
    return image_size


def _pooled_stack(in_channels, image_size, widths, fc, conv_dropout, fc_dropout):
    """CNN1/CNN2 recipe: every conv → BN, ReLU, max-pool, dropout; every hidden fc → BN, ReLU,
    dropout. Returns the feature extractor and its output size."""
    layers, c = [], in_channels
    for w in widths:
        layers += conv_block(c, w, pool=True, dropout=conv_dropout)
        c = w
    side = _side_after_pools(image_size, len(widths))
    head, f = fc_stack(c * side * side, fc, fc_dropout, bn=True)
    return nn.Sequential(*layers, nn.Flatten(), *head), f


class CNN1(FERNet):
    """Base CNN1: 5 conv (each → BN, ReLU, max-pool, dropout) + 4 fc (first three → BN, ReLU,
    dropout; the fourth gives the class scores)."""

    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48,
                 widths: tuple[int, ...] = (32, 64, 128, 128, 256), fc: tuple[int, ...] = (256, 128, 64),
                 conv_dropout: float = 0.25, fc_dropout: float = 0.5):
        super().__init__(*_pooled_stack(in_channels, image_size, widths, fc, conv_dropout, fc_dropout),
                         num_classes)
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                              widths=list(widths), fc=list(fc), conv_dropout=conv_dropout,
                              fc_dropout=fc_dropout)


class CNN2(FERNet):
    """Base CNN2: 4 conv (each → BN, ReLU, max-pool, dropout) + 3 fc (first two → BN, ReLU,
    dropout; the third gives the class scores)."""

    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48,
                 widths: tuple[int, ...] = (32, 64, 128, 256), fc: tuple[int, ...] = (256, 128),
                 conv_dropout: float = 0.25, fc_dropout: float = 0.5):
        super().__init__(*_pooled_stack(in_channels, image_size, widths, fc, conv_dropout, fc_dropout),
                         num_classes)
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                              widths=list(widths), fc=list(fc), conv_dropout=conv_dropout,
                              fc_dropout=fc_dropout)


class CNN3(FERNet):
    """Base CNN3: 6 conv + 2 fc. Conv 1 and 5 → BN, ReLU; conv 2, 3, 4, 6 → BN, ReLU, max-pool,
    dropout. The first fc → ReLU (no BN, no dropout, as the paper says); the second gives the
    class scores."""

    POOLED = (False, True, True, True, False, True)

    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48,
                 widths: tuple[int, ...] = (32, 32, 64, 128, 128, 256), fc: int = 256,
                 conv_dropout: float = 0.25):
        if len(widths) != 6:
            raise ValueError("CNN3 has exactly 6 conv layers: widths needs 6 values")
        layers, c = [], in_channels
        for w, pool in zip(widths, self.POOLED):
            layers += conv_block(c, w, pool=pool, dropout=conv_dropout)
            c = w
        side = _side_after_pools(image_size, sum(self.POOLED))
        layers += [nn.Flatten(), *fc_block(c * side * side, fc, bn=False, dropout=0.0)]
        super().__init__(nn.Sequential(*layers), fc, num_classes)
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                              widths=list(widths), fc=fc, conv_dropout=conv_dropout)
