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
    ``pad_crop`` p > 0 takes a random crop of the image zero-padded by p pixels, and ``erase_p``
    blanks one random rectangle (2–25 % of the image) per image with that probability
    (random erasing) — two of the stronger recipes' regularisers.
    """

    def __init__(
        self,
        hflip: bool = True,
        max_rotate_deg: float = 10.0,
        min_scale: float = 0.9,
        max_scale: float = 1.1,
        max_translate: float = 0.1,
        brightness: float = 0.0,
        pad_crop: int = 0,
        erase_p: float = 0.0,
    ):
        self.hflip = hflip
        self.max_rotate = math.radians(max_rotate_deg)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.max_translate = max_translate
        self.brightness = brightness
        self.pad_crop, self.erase_p = pad_crop, erase_p

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
        if self.pad_crop > 0:
            x = self._pad_crop(x)
        if self.erase_p > 0:
            x = self._erase(x)
        return x

    def _pad_crop(self, x):
        b, _, h, w = x.shape
        shift = torch.randint(-self.pad_crop, self.pad_crop + 1, (b, 2), device=x.device).float()
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def _erase(self, x):
        b, _, h, w = x.shape
        u = torch.rand(b, 5, device=x.device)
        area = 0.02 + u[:, 0] * 0.23
        aspect = torch.exp((u[:, 1] * 2 - 1) * math.log(3.3))
        eh, ew = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        top, left = u[:, 2] * (1 - eh), u[:, 3] * (1 - ew)
        ys = (torch.arange(h, device=x.device) + 0.5) / h
        xs = (torch.arange(w, device=x.device) + 0.5) / w
        inside = ((ys[None, :, None] >= top[:, None, None]) & (ys[None, :, None] < (top + eh)[:, None, None])
                  & (xs[None, None, :] >= left[:, None, None]) & (xs[None, None, :] < (left + ew)[:, None, None]))
        mask = inside & (u[:, 4] < self.erase_p)[:, None, None]
        return x.masked_fill(mask[:, None], 0.5)

    def __repr__(self):
        return (f"BatchAugment(hflip={self.hflip}, max_rotate_deg={math.degrees(self.max_rotate):g}, "
                f"scale=[{self.min_scale}, {self.max_scale}], max_translate={self.max_translate}, "
                f"brightness={self.brightness}, pad_crop={self.pad_crop}, erase_p={self.erase_p})")
