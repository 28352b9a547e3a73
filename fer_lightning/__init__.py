"""fer_lightning: train and compare facial-expression-recognition models as a cached stage DAG."""

import os

__version__ = "0.1.0"

# The FER2013 label order (0=Angry ... 6=Neutral). Every dataset in the product maps onto it.
CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Grey-level statistics of FER2013 Training (mean 129.4, std 65.0 on 0..255); close enough for any
# face dataset, and fixed so that a model does not depend on the split it was trained on. Kept here
# (not in fer_lightning.data) so that `predict` and `evaluate` need not import Lightning.
MEAN, STD = 0.507, 0.255


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def at_least_one(value: str) -> int:
    """An argparse type for counts (``--threads``, ``--workers``, ``--min-face``): a whole number
    of 1 or more, else a one-line usage error."""
    import argparse

    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of 1 or more")
    return n
