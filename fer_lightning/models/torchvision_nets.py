"""torchvision backbones (EfficientNet, MobileNet) as FER classifiers — papers 003 and 001.

The grey faces arrive as ``[B, 1, h, w]`` batches normalised with the dataset statistics
(``fer_lightning.MEAN``/``STD``). On the device, in the batch, the net resizes them to ``input_size``,
repeats the grey channel three times and renormalises with ImageNet statistics, so that local
ImageNet weights see the input they were trained on. Then: the backbone's ``features``, global
average pooling (``pooled``), the head (``Linear → ReLU → Dropout`` per width; paper 003: 4096,
1024, dropout 0.2), and the last linear layer (``classifier``).

Weights: nothing is downloaded, ever. ``weights: null`` trains from scratch; ``weights: <path>``
loads a local ``.pth`` state dict of the same torchvision model (e.g. torchvision's
``mobilenet_v2-b0353104.pth``); its classifier is ignored, its ``features`` must match exactly.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning import MEAN, STD
from fer_lightning.errors import UserError
from fer_lightning.models.cnn import fc_stack

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
         "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_s")


def load_backbone_weights(model: nn.Module, path: str, arch: str) -> None:
    """Load the ``features.*`` tensors of a local torchvision state dict into ``model``."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise UserError(f"weights: {path}: file not found — weights are never downloaded; pass a local .pth "
                        f"state dict of torchvision's {arch}, or weights: null to train from scratch")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"weights: {p}: not a readable PyTorch state dict ({e.__class__.__name__})")
    for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"weights: {p}: expected a state dict (name -> tensor), found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    want = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    missing = [k for k in want if k not in state]
    if missing:
        raise UserError(f"weights: {p}: not a {arch} state dict: {len(missing)} of {len(want)} backbone "
                        f"tensors missing (first: {missing[0]})")
    bad = [k for k in want if tuple(state[k].shape) != tuple(want[k].shape)]
    if bad:
        raise UserError(f"weights: {p}: not a {arch} state dict: {bad[0]} has shape "
                        f"{tuple(state[bad[0]].shape)}, expected {tuple(want[bad[0]].shape)}")
    model.load_state_dict({k: state[k] for k in want}, strict=False)


class TorchvisionNet(nn.Module):
    """A torchvision classification backbone with a configurable FER head.

    Args:
        arch: one of ``ARCHS`` (torchvision model names).
        num_classes: output classes.
        input_size: side the faces are resized to on the device (paper 003: 200; paper 001: 224).
        head: hidden widths between the pooled features and the classifier (``[]``: none).
        dropout: dropout after each hidden layer.
        weights: ``null`` or the path of a local torchvision state dict for the backbone.
        in_channels: channels of the incoming batch (1 for grey faces, 3 for colour).
    """

    def __init__(self, arch: str = "mobilenet_v2", num_classes: int = 7, input_size: int = 224,
                 head: list[int] | tuple[int, ...] = (4096, 1024), dropout: float = 0.2,
                 weights: str | None = None, in_channels: int = 1):
        super().__init__()
        import torchvision

        if arch not in ARCHS:
            raise UserError(f"arch: '{arch}' is not supported (choose one of {', '.join(ARCHS)})")
        full = torchvision.models.get_model(arch, weights=None)
        if weights:
            load_backbone_weights(full, weights, arch)
        self.body = full.features
        self.pooled_dim = next(m for m in full.classifier.modules() if isinstance(m, nn.Linear)).in_features
        layers, f = fc_stack(self.pooled_dim, head, dropout)
        self.head = nn.Sequential(*layers)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.input_size, self.in_channels = input_size, in_channels
        # ours -> ImageNet normalisation, folded into one affine map per output channel
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (STD / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((MEAN - mean) / std).view(1, 3, 1, 1), persistent=False)
        # the state dict carries the weights: a rebuilt net must not need the .pth file again
        self.init_args = dict(arch=arch, num_classes=num_classes, input_size=input_size, head=list(head),
                              dropout=dropout, weights=None, in_channels=in_channels)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x * self.scale + self.shift).contiguous(memory_format=torch.channels_last)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled backbone features (``pooled_dim`` wide)."""
        return F.adaptive_avg_pool2d(self.body(self._prepare(x)), 1).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
