"""Metrics from saved probabilities, with torchmetrics, so every stage scores the same way."""

import numpy as np
import torch
from torchmetrics.functional.classification import (multiclass_accuracy,
                                                    multiclass_confusion_matrix,
                                                    multiclass_f1_score,
                                                    multiclass_precision, multiclass_recall)


def score(preds_or_probs, labels, num_classes: int = 7) -> dict:
    """Accuracy, macro P/R/F1, per-class P/R/F1 and the confusion matrix (rows = true class).

    ``preds_or_probs`` is either class indices ``[N]`` or probabilities ``[N, C]``.
    """
    p = torch.as_tensor(np.asarray(preds_or_probs))
    y = torch.as_tensor(np.asarray(labels)).long()
    if p.ndim == 2:
        p = p.argmax(1)
    p = p.long()
    kw = dict(num_classes=num_classes)
    per = {name: fn(p, y, average="none", **kw).tolist() for name, fn in
           (("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score))}
    return {
        "n": int(len(y)),
        "acc": float(multiclass_accuracy(p, y, average="micro", **kw)),
        "precision": float(multiclass_precision(p, y, average="macro", **kw)),
        "recall": float(multiclass_recall(p, y, average="macro", **kw)),
        "f1": float(multiclass_f1_score(p, y, average="macro", **kw)),
        "per_class": per,
        "confusion": multiclass_confusion_matrix(p, y, **kw).tolist(),
    }
