"""FER+'s ten annotators as a "teacher": their vote distribution over the 7 classes for every
FER2013 Training row, in the form of a stage's ``probs.npz``, so that the distillation option
(``data.teacher_probs``) blends it into the original labels — training keeps FER2013's rows and
labels, and only the targets soften towards what the annotators saw. Rows FER+ drops (top vote
contempt, unknown or not a face) keep their one-hot original label.

    python bench/ferplus_teacher.py fer2013.csv.gz fer2013new.csv --out ferplus_teacher.npz
    fer-lightning pipeline run configs/pipelines/fer2013_cpu.yaml --data fer2013.csv.gz --only vgg_adam \\
        --set data.init_args.teacher_probs=ferplus_teacher.npz --set data.init_args.teacher_weight=0.5

(The Training split of a config with ``val_split: PublicTest``: every Training row.)
"""

import argparse

import numpy as np

from fer_lightning.artifacts import atomic_save_npz
from fer_lightning.data.fer2013 import load_fer2013, read_ferplus


def ferplus_targets(csv, votes_csv) -> tuple[np.ndarray, np.ndarray, float]:
    """``(train_probs [N, 7], train_labels [N], agreement)`` for FER2013's Training rows;
    ``agreement``: the share of the rows FER+ keeps whose majority vote is the original label."""
    d = load_fer2013(csv)
    labels, training = d["labels"].numpy(), d["usage"].numpy() == 0
    majority, votes, keep = read_ferplus(votes_csv, len(labels))
    one_hot = np.eye(votes.shape[1], dtype=np.float32)[labels]
    target = np.where((keep & (votes.sum(1) > 0))[:, None], votes, one_hot)[training]
    return target.astype(np.float32), labels[training], float((majority == labels)[training & keep].mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="fer2013.csv[.gz]")
    ap.add_argument("votes", help="fer2013new.csv (FER+ votes, row-aligned with the CSV)")
    ap.add_argument("--out", default="ferplus_teacher.npz")
    a = ap.parse_args()
    probs, labels, agree = ferplus_targets(a.csv, a.votes)
    atomic_save_npz(a.out, train_probs=probs, train_labels=labels)
    print(f"{a.out}: {len(labels)} Training rows; FER+'s majority agrees with the original label on "
          f"{100 * agree:.1f} % of the rows it keeps; the original label's mean share of the votes: "
          f"{100 * probs[np.arange(len(labels)), labels].mean():.1f} %")


if __name__ == "__main__":
    main()
