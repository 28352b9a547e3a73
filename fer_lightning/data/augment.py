"""Augmentation of whole batches on the device the batch already lives on.

One random affine transform per image (flip, rotation, zoom, shift) applied with a single
`grid_sample` call: no per-sample Python, no PIL, no worker processes.

On a GPU a 48×48 batch costs little to compute and a lot to launch: building 64 transforms is
some 25 tiny kernels, more than the resampling itself. So the random parameters are drawn for
``pool`` images at once (one FER2013 epoch by default) and each batch takes the next slice of
them, and the sampling grid is built as the outer sum of its x and y parts (3 kernels) instead of
``F.affine_grid``'s matrix product (which is also 3× slower on the CPU).
"""

import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=16)
def pixel_centres(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The centres of ``n`` pixels along a side in grid coordinates (−1 … 1, align_corners=False)."""
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, C, h, w], align_corners=False)``, built as x-part + y-part:
    ``grid[b, i, j] = theta[b, :, 0] * x_j + theta[b, :, 1] * y_i + theta[b, :, 2]``."""
    xs, ys = pixel_centres(w, theta.device, theta.dtype), pixel_centres(h, theta.device, theta.dtype)
    along_x = theta[:, None, :, 0] * xs[None, :, None]                                       # [B, w, 2]
    along_y = torch.addcmul(theta[:, None, :, 2], theta[:, None, :, 1], ys[None, :, None])   # [B, h, 2]
    return along_y[:, :, None, :] + along_x[:, None, :, :]                                   # [B, h, w, 2]


class BatchAugment:
    """Random horizontal flip, rotation, zoom and shift for a float batch ``[B, C, H, W]``.

    Defaults (the papers are silent on augmentation): flip p=0.5, rotation ±10°, zoom 0.9–1.1,
    shift ±10 % of the image side — mild enough that a 48×48 face stays a face. ``brightness``
    b > 0 also scales each image's intensities by a factor in [1 − b, 1 + b] (paper 001).
    ``pad_crop`` p > 0 takes a random crop of the image zero-padded by p pixels, and ``erase_p``
    blanks one random rectangle (2–25 % of the image) per image with that probability
    (random erasing) — two of the stronger recipes' regularisers.

    ``pool``: images' worth of random parameters drawn at once. A pool is redrawn when it runs
    out, when the batches change device or size, and when the global seed changes — the training
    module reseeds it at every epoch start, so a resumed run draws what an uninterrupted one does.
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
        pool: int = 32768,
    ):
        self.hflip = hflip
        self.max_rotate = math.radians(max_rotate_deg)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.max_translate = max_translate
        self.brightness = brightness
        self.pad_crop, self.erase_p = pad_crop, erase_p
        self.pool = pool
        self.reset()

    def reset(self):
        """Forget the drawn parameters: the next batch draws a fresh pool."""
        self._pool, self._key, self._used = {}, None, 0

    def __getstate__(self):  # a copy (checkpoint, spawned process) starts without the pool
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "_key", "_used")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self._take(x)
        x = F.grid_sample(x, affine_grid(p["theta"], h, w), mode="bilinear", padding_mode="border",
                          align_corners=False)
        if self.brightness > 0:
            x = (x * p["brightness"].view(b, 1, 1, 1)).clamp_(0, 1)
        if self.pad_crop > 0:
            x = self._pad_crop(x, p)
        if self.erase_p > 0:
            x = self._erase(x, p)
        return x

    # -- random parameters ------------------------------------------------------------------
    def _take(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The next ``len(x)`` images' parameters from the pool (slices: no kernel launches)."""
        b, key = len(x), (torch.initial_seed(), x.device, x.dtype, tuple(x.shape[-2:]))
        if key != self._key or self._used + b > len(self._pool["theta"]):
            self._pool, self._key, self._used = self._draw(max(self.pool, b), *key[1:]), key, 0
        out = {k: v[self._used:self._used + b] for k, v in self._pool.items()}
        self._used += b
        return out

    def _draw(self, n: int, device, dtype, size) -> dict[str, torch.Tensor]:
        h, w = size
        u = torch.rand(n, 5, device=device, dtype=dtype)
        angle = (u[:, 0] * 2 - 1) * self.max_rotate
        scale = self.min_scale + u[:, 1] * (self.max_scale - self.min_scale)
        tx, ty = (u[:, 2] * 2 - 1) * self.max_translate * 2, (u[:, 3] * 2 - 1) * self.max_translate * 2
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.hflip else torch.ones_like(angle)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        pool = {"theta": torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                                      torch.stack([sin * flip, cos, ty], 1)], 1)}
        if self.brightness > 0:
            pool["brightness"] = 1 + (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * self.brightness
        if self.pad_crop > 0:   # a whole-pixel shift: a pure translation
            shift = torch.randint(-self.pad_crop, self.pad_crop + 1, (n, 2), device=device).to(dtype)
            crop = torch.zeros(n, 2, 3, device=device, dtype=dtype)
            crop[:, 0, 0] = crop[:, 1, 1] = 1
            crop[:, 0, 2], crop[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
            pool["crop"] = crop
        if self.erase_p > 0:    # the rectangle's edges as fractions of the side, and whether to erase
            e = torch.rand(n, 5, device=device, dtype=dtype)
            area = 0.02 + e[:, 0] * 0.23
            aspect = torch.exp((e[:, 1] * 2 - 1) * math.log(3.3))
            eh, ew = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
            top, left = e[:, 2] * (1 - eh), e[:, 3] * (1 - ew)
            pool["erase"] = torch.stack([top, top + eh, left, left + ew], 1) * 2 - 1   # grid coordinates
            pool["erase_on"] = e[:, 4] < self.erase_p
        return pool

    # -- the optional regularisers ------------------------------------------------------------
    def _pad_crop(self, x, p=None):
        p = p if p is not None else self._take(x)
        grid = affine_grid(p["crop"], *x.shape[-2:])
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def _erase(self, x, p=None):
        p = p if p is not None else self._take(x)
        h, w = x.shape[-2:]
        ys, xs = pixel_centres(h, x.device, x.dtype), pixel_centres(w, x.device, x.dtype)
        e = p["erase"]
        rows = (ys >= e[:, 0:1]) & (ys < e[:, 1:2]) & p["erase_on"][:, None]   # [B, h]
        cols = (xs >= e[:, 2:3]) & (xs < e[:, 3:4])                            # [B, w]
        return x.masked_fill((rows[:, :, None] & cols[:, None, :])[:, None], 0.5)

    def __repr__(self):
        return (f"BatchAugment(hflip={self.hflip}, max_rotate_deg={math.degrees(self.max_rotate):g}, "
                f"scale=[{self.min_scale}, {self.max_scale}], max_translate={self.max_translate}, "
                f"brightness={self.brightness}, pad_crop={self.pad_crop}, erase_p={self.erase_p})")
