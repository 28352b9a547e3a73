"""Augmentation of whole batches on the device the batch already lives on.

One random affine transform per image (flip, rotation, zoom, shift) applied with a single
`affine_grid` + `grid_sample` call: no per-sample Python, no PIL, no worker processes.
"""

import math

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random horizontal flip, rotation, zoom and shift for a float batch ``[B, C, H, W]``.

    Defaults (the papers are silent on augmentation): flip p=0.5, rotation ±10°, zoom 0.9–1.1,
    shift ±10 % of the image side — mild enough that a 48×48 face stays a face. ``brightness``
    b > 0 also scales each image's intensities by a factor in [1 − b, 1 + b] (paper 001).
    """

    def __init__(
        self,
        hflip: bool = True,
        max_rotate_deg: float = 10.0,
        min_scale: float = 0.9,
        max_scale: float = 1.1,
        max_translate: float = 0.1,
        brightness: float = 0.0,
    ):
        self.hflip = hflip
        self.max_rotate = math.radians(max_rotate_deg)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.max_translate = max_translate
        self.brightness = brightness

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        u = torch.rand(b, 5, device=dev)
        angle = (u[:, 0] * 2 - 1) * self.max_rotate
        scale = self.min_scale + u[:, 1] * (self.max_scale - self.min_scale)
        tx, ty = (u[:, 2] * 2 - 1) * self.max_translate * 2, (u[:, 3] * 2 - 1) * self.max_translate * 2
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.hflip else torch.ones(b, device=dev)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.brightness > 0:
            factor = 1 + (torch.rand(b, 1, 1, 1, device=dev) * 2 - 1) * self.brightness
            x = (x * factor).clamp_(0, 1)
        return x

    def __repr__(self):
        return (f"BatchAugment(hflip={self.hflip}, max_rotate_deg={math.degrees(self.max_rotate):g}, "
                f"scale=[{self.min_scale}, {self.max_scale}], max_translate={self.max_translate}, "
                f"brightness={self.brightness})")
