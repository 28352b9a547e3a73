"""Handcrafted face descriptors with scikit-image (paper 001 §3.3.2): HOG and uniform-LBP
histograms, computed on the grey uint8 images."""

import numpy as np


def hog_lbp(images, hog: dict | None = None, lbp: dict | None = None) -> np.ndarray:
    """``[N, d]`` float32 descriptors of uint8 ``images`` ``[N, 1, H, W]`` (or ``[N, H, W]``).

    Args:
        hog: ``skimage.feature.hog`` settings on top of paper 001's (9 orientations, 8×8-pixel
            cells, 2×2-cell blocks); ``{}`` for exactly those, ``None`` to leave HOG out.
        lbp: ``{P, R, grid}``: uniform LBP with P neighbours at radius R (paper 001: 8, 1), as
            ``P + 2``-bin histograms over a ``grid``×``grid`` tiling of the face (default 7), so
            that the descriptor keeps where on the face a texture is; ``None`` to leave LBP out.
    """
    from skimage.feature import hog as skimage_hog
    from skimage.feature import local_binary_pattern

    imgs = np.asarray(images)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    if hog is None and lbp is None:
        raise ValueError("hog_lbp: ask for hog, lbp or both")
    hog_kw = None if hog is None else {"orientations": 9, "pixels_per_cell": (8, 8),
                                       "cells_per_block": (2, 2), "block_norm": "L2-Hys", **hog}
    if hog_kw:
        hog_kw["pixels_per_cell"] = tuple(hog_kw["pixels_per_cell"])
        hog_kw["cells_per_block"] = tuple(hog_kw["cells_per_block"])
    lbp_kw = None if lbp is None else {"P": 8, "R": 1, "grid": 7, **lbp}
    rows = []
    for img in imgs:
        parts = []
        if hog_kw:
            parts.append(skimage_hog(img, feature_vector=True, **hog_kw))
        if lbp_kw:
            p, g = lbp_kw["P"], lbp_kw["grid"]
            codes = local_binary_pattern(img, p, lbp_kw["R"], method="uniform")
            for band in np.array_split(codes, g, axis=0):
                for cell in np.array_split(band, g, axis=1):
                    hist = np.bincount(cell.astype(np.int64).ravel(), minlength=p + 2)
                    parts.append(hist / max(cell.size, 1))
        rows.append(np.concatenate(parts))
    return np.asarray(rows, dtype=np.float32)
