"""torchvision's ResNets with a stem for 48×48 grey faces — the residual baseline of the FER2013
state of the art (ResNet-18/34 from scratch: 72–73 % PrivateTest in the literature).

ImageNet's stem (7×7 conv stride 2, then max-pool: ÷4) would leave a 48×48 face 2×2 before the
last stage. Ours: a 3×3 conv, stride 1, on the grey channel, then the max-pool (``stem_pool``),
so the four stages see 24, 12, 6 and 3 pixels (without the pool: 48 … 6, at 4× the compute).
``features`` = everything up to the globally pooled 512-d vector (``dropout`` after it, if any);
``classifier`` = torchvision's ``fc``. ImageNet weights do not fit this stem: no ``weights``.
"""

import torch
from torch import nn

from fer_lightning.errors import UserError

ARCHS = ("resnet18", "resnet34")


class ResNet(nn.Module):
    def __init__(self, arch: str = "resnet18", num_classes: int = 7, in_channels: int = 1,
                 stem_pool: bool = True, dropout: float = 0.0):
        super().__init__()
        import torchvision

        if arch not in ARCHS:
            raise UserError(f"arch: '{arch}' is not supported (choose one of {', '.join(ARCHS)})")
        full = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        stem = nn.Conv2d(in_channels, full.conv1.out_channels, 3, padding=1, bias=False)
        self.features = nn.Sequential(
            stem, full.bn1, full.relu, full.maxpool if stem_pool else nn.Identity(),
            full.layer1, full.layer2, full.layer3, full.layer4, full.avgpool, nn.Flatten(),
            *([nn.Dropout(dropout)] if dropout > 0 else []))
        self.feature_dim = full.fc.in_features
        self.classifier = full.fc
        self.init_args = dict(arch=arch, num_classes=num_classes, in_channels=in_channels,
                              stem_pool=stem_pool, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
