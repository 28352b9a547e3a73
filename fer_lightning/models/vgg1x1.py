"""Paper 002's VGG-like CNN with a 1×1 first convolution (Table I), for 48×48 grey faces:

    conv 32@1×1 → conv 32@5×5 → pool → conv 64@3×3 → pool → conv 128@3×3 (padded) → pool
    → fc 2048 (dropout 0.6) → fc 1024 (dropout 0.4) → 7

Unpadded convolutions as in the table (48 → 44 → 22 → 20 → 10 → 10 → 5, so 128·5·5 = 3200 inputs
to the first fc layer); ReLU after every layer. The paper mentions no batch normalisation;
``batchnorm: true`` adds it after each convolution (our option, off by default).
"""

import torch
from torch import nn

from fer_lightning.models.cnn import fc_stack


class VGG1x1(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48,
                 widths: tuple[int, int, int, int] = (32, 32, 64, 128), fc: tuple[int, int] = (2048, 1024),
                 dropout: tuple[float, float] = (0.6, 0.4), batchnorm: bool = False):
        super().__init__()

        def conv(cin, cout, k, pad):
            return [nn.Conv2d(cin, cout, k, padding=pad, bias=not batchnorm)] + \
                ([nn.BatchNorm2d(cout)] if batchnorm else []) + [nn.ReLU(inplace=True)]

        w1, w2, w3, w4 = widths
        layers = conv(in_channels, w1, 1, 0) + conv(w1, w2, 5, 0) + [nn.MaxPool2d(2)] + \
            conv(w2, w3, 3, 0) + [nn.MaxPool2d(2)] + conv(w3, w4, 3, 1) + [nn.MaxPool2d(2)]
        side = ((image_size - 4) // 2 - 2) // 2 // 2
        if side < 1:
            raise ValueError(f"VGG1x1: image_size {image_size} is too small (needs ≥ 16)")
        head, f = fc_stack(w4 * side * side, fc, dropout)
        self.features = nn.Sequential(*layers, nn.Flatten(), *head)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                              widths=list(widths), fc=list(fc), dropout=list(dropout), batchnorm=batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
