"""Augmentation of whole batches on the device the batch already lives on.

One random affine transform per image (flip, rotation, zoom, shift) applied with a single
`grid_sample` call: no per-sample Python, no PIL, no worker processes.

On a GPU a 48×48 batch costs little to compute and a lot to launch: building 64 transforms is
some 25 tiny kernels, more than the resampling itself. So the random parameters are drawn for
``pool`` images at once (one FER2013 epoch by default) and each batch takes the next slice of
them, and the sampling grid is built as the outer sum of its x and y parts (3 kernels) instead of
``F.affine_grid``'s matrix product (which is also 3× slower on the CPU). The pool keeps the
parameters in the shapes they broadcast in, so a batch dispatches no view operators either.
"""

import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=16)
def pixel_centres(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The centres of ``n`` pixels along a side in grid coordinates (−1 … 1, align_corners=False)."""
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


@functools.lru_cache(maxsize=16)
def _centres_along(axis: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``pixel_centres`` shaped ``[1, 1, 1, 1]`` but for ``n`` along ``axis``: to broadcast over a
    grid ``[B, h, w, 2]`` (along w: axis 2; h: 1) or a batch ``[B, C, h, w]`` (h: 2; w: 3)."""
    shape = [1, 1, 1, 1]
    shape[axis] = n
    return pixel_centres(n, device, dtype).view(shape)


def grid_columns(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three columns of affine transforms ``theta [B, 2, 3]``, each shaped ``[B, 1, 1, 2]``
    for :func:`grid_from_columns`. Done once per parameter pool, so that a batch's grid needs no
    reshaping: on a GPU each view op is CPU time spent dispatching, not computing."""
    return tuple(theta[:, None, None, :, i].contiguous() for i in range(3))


def grid_from_columns(cx: torch.Tensor, cy: torch.Tensor, c0: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``grid[b, i, j] = cx[b] * x_j + cy[b] * y_i + c0[b]``, ``[B, h, w, 2]``: 3 kernels."""
    along_x = cx * _centres_along(2, w, cx.device, cx.dtype)                       # [B, 1, w, 2]
    along_y = torch.addcmul(c0, cy, _centres_along(1, h, cx.device, cx.dtype))     # [B, h, 1, 2]
    return along_y + along_x


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, C, h, w], align_corners=False)``, built as x-part + y-part:
    ``grid[b, i, j] = theta[b, :, 0] * x_j + theta[b, :, 1] * y_i + theta[b, :, 2]``."""
    return grid_from_columns(*grid_columns(theta), h, w)


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
        h, w = x.shape[-2:]
        p = self._take(x)
        x = F.grid_sample(x, grid_from_columns(p["tx"], p["ty"], p["t0"], h, w), mode="bilinear",
                          padding_mode="border", align_corners=False)
        if self.brightness > 0:
            x = (x * p["brightness"]).clamp_(0, 1)
        if self.pad_crop > 0:
            x = self._pad_crop(x, p)
        if self.erase_p > 0:
            x = self._erase(x, p)
        return x

    # -- random parameters ------------------------------------------------------------------
    def _take(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The next ``len(x)`` images' parameters from the pool (slices: no kernel launches)."""
        b, key = len(x), (torch.initial_seed(), x.device, x.dtype, tuple(x.shape[-2:]))
        if key != self._key or self._used + b > len(self._pool["tx"]):
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
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        pool = dict(zip(("tx", "ty", "t0"), grid_columns(theta)))
        if self.brightness > 0:
            pool["brightness"] = 1 + (torch.rand(n, 1, 1, 1, device=device, dtype=dtype) * 2 - 1) * self.brightness
        if self.pad_crop > 0:   # a whole-pixel shift: a pure translation
            shift = torch.randint(-self.pad_crop, self.pad_crop + 1, (n, 2), device=device).to(dtype)
            crop = torch.zeros(n, 2, 3, device=device, dtype=dtype)
            crop[:, 0, 0] = crop[:, 1, 1] = 1
            crop[:, 0, 2], crop[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
            pool.update(zip(("crop_x", "crop_y", "crop_0"), grid_columns(crop)))
        if self.erase_p > 0:    # the rectangle's edges as fractions of the side, and whether to erase
            e = torch.rand(n, 5, device=device, dtype=dtype)
            area = 0.02 + e[:, 0] * 0.23
            aspect = torch.exp((e[:, 1] * 2 - 1) * math.log(3.3))
            eh, ew = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
            top, left = e[:, 2] * (1 - eh), e[:, 3] * (1 - ew)
            # the rectangle's edges in grid coordinates, each [n, 1, 1, 1] to broadcast over [B, 1, h, w]
            edges = (torch.stack([top, top + eh, left, left + ew], 1) * 2 - 1).view(n, 4, 1, 1, 1)
            pool.update(zip(("erase_top", "erase_bottom", "erase_left", "erase_right"), edges.unbind(1)))
            pool["erase_on"] = (e[:, 4] < self.erase_p).view(n, 1, 1, 1)
        return pool

    # -- the optional regularisers ------------------------------------------------------------
    def _pad_crop(self, x, p=None):
        p = p if p is not None else self._take(x)
        grid = grid_from_columns(p["crop_x"], p["crop_y"], p["crop_0"], *x.shape[-2:])
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def _erase(self, x, p=None):
        p = p if p is not None else self._take(x)
        h, w = x.shape[-2:]
        ys, xs = _centres_along(2, h, x.device, x.dtype), _centres_along(3, w, x.device, x.dtype)
        rows = (ys >= p["erase_top"]) & (ys < p["erase_bottom"]) & p["erase_on"]   # [B, 1, h, 1]
        cols = (xs >= p["erase_left"]) & (xs < p["erase_right"])                     # [B, 1, 1, w]
        return x.masked_fill(rows & cols, 0.5)

    def __repr__(self):
        return (f"BatchAugment(hflip={self.hflip}, max_rotate_deg={math.degrees(self.max_rotate):g}, "
                f"scale=[{self.min_scale}, {self.max_scale}], max_translate={self.max_translate}, "
                f"brightness={self.brightness}, pad_crop={self.pad_crop}, erase_p={self.erase_p})")
