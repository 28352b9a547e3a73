"""torchvision's ResNets with a stem for 48×48 grey faces — the residual baseline of the FER2013
state of the art (ResNet-18/34 from scratch: 72–73 % PrivateTest in the literature).

ImageNet's stem (7×7 conv stride 2, then max-pool: ÷4) would leave a 48×48 face 2×2 before the
last stage. Ours: a 3×3 conv, stride 1, on the grey channel, then the max-pool (``stem_pool``),
so the four stages see 24, 12, 6 and 3 pixels (without the pool: 48 … 6, at 4× the compute).
``widths`` narrows the four stages (torchvision's are 64-128-256-512) with torchvision's own
blocks — a residual net cheap enough for the CPU, as ``vgg_small.yaml`` is for the VGG.
``features`` = everything up to the globally pooled vector (``dropout`` after it, if any);
``classifier`` = torchvision's ``fc``. ImageNet weights do not fit this stem: no ``weights``.
"""

import torch
from torch import nn

from fer_lightning.errors import UserError

ARCHS = ("resnet18", "resnet34")


class ResNet(nn.Module):
    def __init__(self, arch: str = "resnet18", num_classes: int = 7, in_channels: int = 1,
                 stem_pool: bool = True, dropout: float = 0.0, widths: tuple[int, ...] | None = None):
        super().__init__()
        import torchvision

        if arch not in ARCHS:
            raise UserError(f"arch: '{arch}' is not supported (choose one of {', '.join(ARCHS)})")
        full = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if widths is not None:
            _narrow(full, list(widths), num_classes)
        stem = nn.Conv2d(in_channels, full.bn1.num_features, 3, padding=1, bias=False)
        self.features = nn.Sequential(
            stem, full.bn1, full.relu, full.maxpool if stem_pool else nn.Identity(),
            full.layer1, full.layer2, full.layer3, full.layer4, full.avgpool, nn.Flatten(),
            *([nn.Dropout(dropout)] if dropout > 0 else []))
        self.feature_dim = full.fc.in_features
        self.classifier = full.fc
        self.init_args = dict(arch=arch, num_classes=num_classes, in_channels=in_channels,
                              stem_pool=stem_pool, dropout=dropout,
                              widths=None if widths is None else list(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _narrow(full: nn.Module, widths: list[int], num_classes: int) -> None:
    """Rebuild ``full``'s four stages at ``widths`` with torchvision's own ``_make_layer`` (its
    BasicBlocks and 1×1 shortcuts), then re-apply torchvision's initialisation to them."""
    if len(widths) != 4 or min(widths) < 1:
        raise UserError(f"widths: a ResNet has 4 stages, so give 4 positive widths (got {widths})")
    from torchvision.models.resnet import BasicBlock

    full.inplanes = widths[0]  # _make_layer reads the input width from here and advances it
    full.bn1 = nn.BatchNorm2d(widths[0])
    for i, w in enumerate(widths):
        stage = f"layer{i + 1}"  # as many blocks as the full-width stage it replaces
        setattr(full, stage, full._make_layer(BasicBlock, w, len(getattr(full, stage)), stride=1 if i == 0 else 2))
    full.fc = nn.Linear(widths[-1], num_classes)
    for m in full.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
