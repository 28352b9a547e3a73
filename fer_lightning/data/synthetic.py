"""The embedded default dataset: procedurally drawn 48×48 grey faces with 7 expressions.

Each face is drawn in its own coordinates (u, v) ∈ [-1, 1]², so pose, size and position vary
freely. An expression is a set of shape parameters (brow height and tilt, eye opening, mouth
curve, opening, width and asymmetry, nose wrinkle). Each sample draws an *intensity* in [0.3, 1]
and blends its class's parameters with neutral's, then adds per-sample jitter — so weak
expressions overlap (fear/surprise, anger/disgust, sadness/neutral) and the task is learnable but
not trivial. Lighting gradients, blur, noise and random occluders make it harder still.
Deterministic for a given seed.
"""

from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.base import TensorDataModule, check_count, resize_uint8

# Shape parameters per class, in CLASS_NAMES order (angry, disgust, fear, happy, sad, surprise,
# neutral): brow_raise (negative = up), brow_tilt (positive = inner ends down), eye_open,
# mouth_curve (positive = smile), mouth_open, mouth_width, mouth_asym, wrinkle.
_PARAMS = np.array([
    [0.06, 0.80, 0.80, -0.25, 0.05, 0.80, 0.0, 0.0],   # angry
    [0.04, 0.40, 0.75, -0.40, 0.10, 1.00, 0.6, 1.0],   # disgust
    [-0.10, -0.40, 1.40, -0.30, 0.45, 1.20, 0.0, 0.0],  # fear
    [0.00, 0.00, 0.70, 0.90, 0.25, 1.25, 0.0, 0.0],    # happy
    [-0.04, -0.60, 0.75, -0.70, 0.00, 0.90, 0.0, 0.0],  # sad
    [-0.15, 0.00, 1.50, 0.00, 0.80, 0.60, 0.0, 0.0],   # surprise
    [0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.0, 0.0],    # neutral
], dtype=np.float32)
_JITTER = np.array([0.02, 0.15, 0.10, 0.15, 0.05, 0.08, 0.15, 0.2], dtype=np.float32)


def _segment_dist(u, v, u0, v0, u1, v1):
    """Distance from points (u, v) to the segment (u0, v0)-(u1, v1), all broadcastable."""
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0, 1)
    return np.hypot(u - (u0 + t * du), v - (v0 + t * dv))


def _ink(dist, half_width, px):
    """Soft (anti-aliased) coverage of a stroke: 1 inside, 0 outside, ~1 pixel ramp."""
    return np.clip((half_width - dist) / px + 0.5, 0, 1)


def _draw(params, rng, n, size):
    p = lambda i: params[:, i, None, None]  # noqa: E731 — (n, 1, 1) per-sample parameter
    r = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = r(0.42, 0.58) * size, r(0.44, 0.60) * size
    rx = r(0.32, 0.40) * size
    ry = rx * r(1.15, 1.35)
    ang = r(-0.2, 0.2)
    dx, dy = xs - cx, ys - cy
    u = (np.cos(ang) * dx + np.sin(ang) * dy) / rx
    v = (-np.sin(ang) * dx + np.cos(ang) * dy) / ry
    px = 1.0 / rx  # one pixel in face units

    bg = r(0.1, 0.9) + r(-0.3, 0.3) * (xs - size / 2) / size + r(-0.3, 0.3) * (ys - size / 2) / size
    skin = np.clip(bg + np.where(rng.random((n, 1, 1)) < 0.5, 1, -1) * r(0.2, 0.45), 0.05, 0.95)
    # features (eyes, brows, mouth) contrast with the skin whatever its tone
    dark = np.where(skin > 0.5, skin - r(0.25, 0.5), skin + r(0.25, 0.5))
    img = bg + (skin - bg) * _ink(np.hypot(u, v), 1.0, px)

    def paint(cover):
        nonlocal img
        img = img + (dark - img) * cover

    for side in (-1.0, 1.0):
        # eyes: ellipses whose height follows eye_open
        eu, ev = side * 0.38, -0.22
        ew, eh = 0.17, 0.09 * p(2)
        paint(_ink(np.hypot((u - eu) / ew, (v - ev) / eh) * np.minimum(ew, eh), np.minimum(ew, eh), px))
        # brows: segments from the inner to the outer end; tilt lowers the inner end
        bv = -0.46 + p(0)
        paint(_ink(_segment_dist(u, v, side * 0.12, bv + 0.12 * p(1), side * 0.58, bv - 0.06 * p(1)),
                   0.06, px))
        # nose wrinkle (disgust): short strokes beside the nose bridge
        w = np.clip(p(7), 0, 1)
        paint(w * _ink(_segment_dist(u, v, side * 0.05, -0.02, side * 0.2, 0.02), 0.035, px))
    # mouth: a parabola (curve, asymmetry) plus an opening (ellipse)
    mw = 0.30 * p(5)
    um = u / mw
    mv = 0.48 - 0.18 * p(3) * um**2 + 0.1 * p(6) * um
    inside = np.clip((1 - np.abs(um)) * mw / px + 0.5, 0, 1)
    paint(inside * _ink(np.abs(v - mv), 0.05, px))
    oh = 0.13 * np.clip(p(4), 0, None) + 1e-3
    ow = mw * 0.8
    paint(_ink(np.hypot(u / ow, (v - 0.5 - 0.4 * oh) / oh) * np.minimum(ow, oh), np.minimum(ow, oh), px))

    # occluder (hand, hair, glasses glare) on some faces
    occ = rng.random(n) < 0.15
    ox, oy, ow_, oh_ = (rng.uniform(0, size, n), rng.uniform(0, size, n),
                        rng.uniform(6, 18, n), rng.uniform(6, 18, n))
    box = ((np.abs(xs - ox[:, None, None]) < ow_[:, None, None] / 2)
           & (np.abs(ys - oy[:, None, None]) < oh_[:, None, None] / 2) & occ[:, None, None])
    img = np.where(box, r(0, 1), img)
    img = gaussian_filter(img, sigma=(0, 0.6, 0.6))
    img = img * r(0.8, 1.2) + r(-0.1, 0.1) + rng.normal(0, 1, img.shape) * r(0.01, 0.06)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)  # the stages of one pipeline run share the draws
def make_synthetic_faces(n: int, seed: int = 0, size: int = 48, chunk: int = 1000):
    """Draw ``n`` faces: (uint8 images [n, 1, size, size], int64 labels [n]) with balanced classes.
    The returned tensors are shared between calls: do not modify them in place."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(_PARAMS))
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    for s in range(0, n, chunk):
        lab = labels[s:s + chunk]
        m = len(lab)
        intensity = rng.uniform(0.3, 1.0, (m, 1)).astype(np.float32)
        params = _PARAMS[6] + intensity * (_PARAMS[lab] - _PARAMS[6])
        params = params + rng.normal(0, 1, params.shape).astype(np.float32) * _JITTER
        images[s:s + m, 0] = _draw(params, rng, m, size)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


class SyntheticFacesDataModule(TensorDataModule):
    """The embedded default dataset (no download): synthetic faces, 7 expressions, 48×48 grey.

    Args:
        num_train / num_val / num_test: split sizes; each split is drawn with its own seed.
        image_size: side of the images handed to the model.
    """

    def __init__(self, num_train: int = 4000, num_val: int = 800, num_test: int = 1600,
                 image_size: int = 48, batch_size: int = 128, eval_batch_size: int = 1024,
                 augment: BatchAugment | None = None, seed: int = 0, teacher_probs: str | None = None,
                 teacher_weight: float = 0.5):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         seed=seed, teacher_probs=teacher_probs, teacher_weight=teacher_weight)
        check_count("image_size", image_size)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size = image_size

    def prepare_data(self):
        """Nothing to read or check: the faces are generated, once, in ``setup``."""

    def load_splits(self):
        out = {}
        for k, (name, n) in enumerate(self.sizes.items()):
            x, y = make_synthetic_faces(n, seed=self.seed * 1000 + k)
            out[name] = (resize_uint8(x, self.image_size), y)
        return out
