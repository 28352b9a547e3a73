"""A classifier head on precomputed feature vectors (paper 001's hybrid: deep + HOG/LBP features
→ BN → 512 → 256 → 7, dropout 0.5 / 0.3). Trained by the ``head`` stage on saved features, so
the backbone that produced them runs once, not once per epoch."""

import torch
from torch import nn

from fer_lightning.models.cnn import fc_stack


class FeatureHead(nn.Module):
    """``[BN] → (Linear → ReLU → Dropout) per hidden width → Linear``.

    Args:
        in_features: width of the input vectors (the ``head`` stage fills it in).
        hidden: hidden widths.
        dropout: one rate per hidden layer, or one rate for all.
        input_batchnorm: batch-normalise the (concatenated) input first.
        num_classes: output classes.
    """

    def __init__(self, in_features: int, hidden: list[int] = (512, 256),
                 dropout: float | list[float] = (0.5, 0.3), input_batchnorm: bool = True,
                 num_classes: int = 7):
        super().__init__()
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden)
        layers, f = fc_stack(in_features, hidden, rates)
        self.features = nn.Sequential(*([nn.BatchNorm1d(in_features)] if input_batchnorm else []), *layers)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.init_args = dict(in_features=in_features, hidden=list(hidden), dropout=rates,
                              input_batchnorm=input_batchnorm, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
