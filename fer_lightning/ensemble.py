"""Score fusion of several models' class probabilities (paper 000, eqs. 10–13), plus a weighted
average with fitted weights. Used by the score_fusion stage, `evaluate` and `predict`."""

import numpy as np

from fer_lightning.errors import UserError

METHODS = {
    "max": lambda stacked: stacked.max(axis=0),
    "mean": lambda stacked: stacked.mean(axis=0),
}


def fuse_scores(member_probs: list[np.ndarray], method: str, weights=None) -> np.ndarray:
    """``[M × (N, C)]`` → ``(N, C)`` fused scores (``weighted`` needs ``weights``)."""
    if method == "weighted":
        return np.tensordot(np.asarray(weights), np.stack(member_probs), axes=1)
    if method not in METHODS:
        raise UserError(f"score_fusion.methods: unknown method '{method}' (known: {', '.join(METHODS)}, weighted)")
    return METHODS[method](np.stack(member_probs))


def fit_weights(member_probs: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Softmax-parameterised member weights minimising the log-loss of the weighted average."""
    from scipy.optimize import minimize

    stacked = np.stack(member_probs).astype(np.float64)          # M, N, C
    picked = stacked[:, np.arange(len(labels)), labels]           # M, N

    def loss(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        return -np.log(w @ picked + 1e-12).mean()

    z = minimize(loss, np.zeros(len(member_probs)), method="L-BFGS-B").x
    w = np.exp(z - z.max())
    return w / w.sum()
