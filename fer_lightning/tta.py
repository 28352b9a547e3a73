"""Test-time augmentation: a net's class probabilities averaged over several views of each face.

A mode is ``none`` or some of four view sets joined by ``_``, in this order:
``crops``: four crops of the face padded by 1/12 of its side (4 px at 48×48, edge pixels
repeated) at its corners, i.e. the face shifted diagonally; ``rotate``: the face turned by ±8°;
``zoom``: the face scaled by 0.92 and 1.08 about its centre; ``flip``: the mirror image of every
view. The face itself is always a view: ``flip`` = 2 views, ``flip_crops`` = 10 (ten crops),
``flip_crops_rotate_zoom`` = 18. Rotation and zoom are the training augmentation's own
transforms (``BatchAugment``: ±10°, 0.9–1.1, edge pixels repeated) at 80 % of its range. Used by
the train stage's exported predictions (so score fusion downstream sees them), ``evaluate`` and
``predict``.
"""

import math
from itertools import combinations

import torch
import torch.nn.functional as F

VIEW_SETS = ("flip", "crops", "rotate", "zoom")
TTA_MODES = ("none",) + tuple("_".join(c) for r in range(1, 5) for c in combinations(VIEW_SETS, r))
ROTATE_DEG = 8.0
ZOOMS = (0.92, 1.08)


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ValueError(f"tta: '{tta}' (expected none or some of {', '.join(VIEW_SETS)} joined by '_' "
                         f"in that order, e.g. flip_crops)")
    return tta


def _corner_crops(x: torch.Tensor) -> list[torch.Tensor]:
    """The four corner crops of the padded face (the centre crop is the face itself)."""
    h, w = x.shape[-2:]
    p = max(1, round(h / 12))
    # Edge pixels repeated, as the default augmentation's shifts fill the border. Black padding
    # (as pad_crop's) cost a model trained without pad_crop 1.4 points on PublicTest (docs/results.md).
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return [padded[..., top:top + h, left:left + w] for top in (0, 2 * p) for left in (0, 2 * p)]


def _turned(x: torch.Tensor, degrees: float = 0.0, zoom: float = 1.0) -> torch.Tensor:
    """The face rotated by ``degrees`` and scaled by ``zoom`` about its centre, sampled as the
    training augmentation samples (bilinear, edge pixels repeated)."""
    a = math.radians(degrees)
    c, s = math.cos(a) / zoom, math.sin(a) / zoom
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of ``tta`` other than the face itself."""
    parts = check_tta(tta).split("_")
    views = _corner_crops(x) if "crops" in parts else []
    if "rotate" in parts:
        views += [_turned(x, degrees=d) for d in (-ROTATE_DEG, ROTATE_DEG)]
    if "zoom" in parts:
        views += [_turned(x, zoom=z) for z in ZOOMS]
    if "flip" in parts:
        views += [v.flip(-1) for v in [x] + views]
    return views


@torch.no_grad()
def tta_probs(net, x: torch.Tensor, tta: str, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Mean softmax of ``net`` over the views of the normalised batch ``x`` (``probs``: the
    softmax of ``x`` itself when the caller has it already)."""
    probs = net(x).softmax(-1) if probs is None else probs
    if tta == "none":
        return probs
    views = tta_views(x, tta)
    total = probs.float()
    for v in views:
        total = total + net(v).softmax(-1).float()
    return (total / (1 + len(views))).to(probs.dtype)
