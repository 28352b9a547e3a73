"""The VGG of Khaireddin & Chen 2021 ("Facial Emotion Recognition: State of the Art Performance on
FER2013", 73.28 % PrivateTest from scratch) — the strongest published single plain CNN on FER2013:

    4 stages of [conv 3×3 → BN → ReLU] × 2 → max-pool 2×2, widths 64-128-256-512
    → fc 4096 → ReLU, dropout → fc 4096 → ReLU, dropout → 7

Their code applies BN before ReLU (the text says after; we follow the code). They train on 40×40
crops; on our full 48×48 faces the last stage is 3×3, so the first fc layer has 512·3·3 inputs
(40M parameters in all, 36M of them in the fc layers). Their recipe — SGD Nesterov, lr 0.01,
reduce-on-plateau ×0.75, random erasing, ten-crop TTA — is ``configs/recipes/``.
"""

import torch
from torch import nn

from fer_lightning.models.cnn import _side_after_pools, conv_block, fc_stack


class VGGNet(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48,
                 widths: tuple[int, ...] = (64, 128, 256, 512), fc: tuple[int, ...] = (4096, 4096),
                 dropout: float = 0.2):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += conv_block(c, w, pool=False, dropout=0.0) + conv_block(w, w, pool=False, dropout=0.0)
            layers.append(nn.MaxPool2d(2))
            c = w
        side = _side_after_pools(image_size, len(widths))
        head, f = fc_stack(c * side * side, fc, dropout)
        self.features = nn.Sequential(*layers, nn.Flatten(), *head)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                              widths=list(widths), fc=list(fc), dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
