"""A cheap CPU check of a GPU-sized recipe: does the model learn with this optimiser? Trains
``--epochs`` slices of ``--batches`` training batches of FER2013 (default augmentation) and prints
PublicTest accuracy after each.

    python bench/early_epochs.py --data fer2013.csv.gz --model resnet18 --lr 0.01
"""

import argparse
import time

import lightning as L
import torch

from fer_lightning.data import BatchAugment, FER2013DataModule
from fer_lightning.models import ResNet, VGGNet
from fer_lightning.module import ClassifierModule

MODELS = {"vggnet": (VGGNet, 1e-4), "resnet18": (lambda: ResNet("resnet18"), 5e-4)}  # net, weight decay


class PrintAccuracy(L.Callback):
    def __init__(self, label):
        self.label, self.t0 = label, time.time()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            print(f"{self.label} slice {trainer.current_epoch}: val acc {float(trainer.callback_metrics['val/acc']):.4f}"
                  f" ({time.time() - self.t0:.0f} s)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    L.seed_everything(0)
    make, wd = MODELS[args.model]
    dm = FER2013DataModule(args.data, val_split="PublicTest", batch_size=64,
                           augment=BatchAugment())
    module = ClassifierModule(make(), optimizer=lambda p: torch.optim.SGD(
        p, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=wd))
    trainer = L.Trainer(max_epochs=args.epochs, limit_train_batches=args.batches,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[PrintAccuracy(f"{args.model} lr {args.lr}")])
    trainer.fit(module, datamodule=dm)


if __name__ == "__main__":
    main()
