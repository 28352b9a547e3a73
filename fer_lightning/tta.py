"""Test-time augmentation: a net's class probabilities averaged over several views of each face.

``none``: the face; ``flip``: the face and its mirror; ``crops``: five crops of the face padded by
1/12 of its side (4 px at 48×48, edge pixels repeated) — the centre and the four corners, i.e. the
face and four copies shifted diagonally; ``flip_crops``: those five and their mirrors (ten
crops). Used by the train stage's exported predictions (so score fusion downstream sees them),
``evaluate`` and ``predict``.
"""

import torch
import torch.nn.functional as F

TTA_MODES = ("none", "flip", "crops", "flip_crops")


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ValueError(f"tta: '{tta}' (expected one of {', '.join(TTA_MODES)})")
    return tta


def _corner_crops(x: torch.Tensor) -> list[torch.Tensor]:
    """The four corner crops of the padded face (the centre crop is the face itself)."""
    h, w = x.shape[-2:]
    p = max(1, round(h / 12))
    # Edge pixels repeated, as the default augmentation's shifts fill the border. Black padding
    # (as pad_crop's) cost a model trained without pad_crop 1.4 points on PublicTest (README).
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return [padded[..., top:top + h, left:left + w] for top in (0, 2 * p) for left in (0, 2 * p)]


@torch.no_grad()
def tta_probs(net, x: torch.Tensor, tta: str, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Mean softmax of ``net`` over the views of the normalised batch ``x`` (``probs``: the
    softmax of ``x`` itself when the caller has it already)."""
    probs = net(x).softmax(-1) if probs is None else probs
    if tta == "none":
        return probs
    views = _corner_crops(x) if "crops" in tta else []
    if "flip" in tta:
        views += [v.flip(-1) for v in [x] + views]
    total = probs.float()
    for v in views:
        total = total + net(v).softmax(-1).float()
    return (total / (1 + len(views))).to(probs.dtype)
