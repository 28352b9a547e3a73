"""Framework overhead and data-path speed, measured side by side in one run.

(a) our ClassifierModule + TensorDataModule through the Lightning Trainer, and (b) a minimal
hand-written PyTorch loop, train the same model on the same batches (same sampler, augmentation,
normalisation, optimiser, memory layout and seed). Epochs alternate a, b, a, b, ... and the ratio
of median images/s is reported (target ≥ 0.97). The loader alone (batching + augmentation, no
model) must run ≥ 10× faster than the training step.

    python bench/overhead.py [--model CNN2] [--images 8192] [--rounds 3]
"""

import argparse
import statistics
import sys
import time

import lightning as L
import torch
import torch.nn.functional as F

from fer_lightning.data import BatchAugment, SyntheticFacesDataModule
from fer_lightning.data.base import MEAN, STD
from fer_lightning.models import CNN1, CNN2, CNN3
from fer_lightning.module import ClassifierModule


class _EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def lightning_epoch(model_cls, dm, seed) -> float:
    torch.manual_seed(seed)
    module = ClassifierModule(model_cls())
    timer = _EpochTimer()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.seconds


def plain_epoch(model_cls, dm, seed) -> float:
    torch.manual_seed(seed)
    net = model_cls().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    augment = dm.augment
    net.train()
    t0 = time.perf_counter()
    for x, y in dm.train_dataloader():
        x = augment(x.float().div_(255.0))
        x = ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def loader_epoch(dm) -> float:
    t0 = time.perf_counter()
    for x, y in dm.train_dataloader():
        x = dm.augment(x.float().div_(255.0))
        x = (x - MEAN) / STD
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="CNN2", choices=["CNN1", "CNN2", "CNN3"])
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    model_cls = {"CNN1": CNN1, "CNN2": CNN2, "CNN3": CNN3}[args.model]
    dm = SyntheticFacesDataModule(num_train=args.images, num_val=64, num_test=64,
                                  batch_size=args.batch_size, augment=BatchAugment())
    dm.setup()
    lightning_epoch(model_cls, dm, 0)  # warm-up (allocator, first-call costs)
    a, b, loader = [], [], []
    for r in range(args.rounds):
        a.append(args.images / lightning_epoch(model_cls, dm, r))
        b.append(args.images / plain_epoch(model_cls, dm, r))
        loader.append(args.images / loader_epoch(dm))
        print(f"round {r}: lightning {a[-1]:.0f} img/s, plain loop {b[-1]:.0f} img/s, "
              f"loader alone {loader[-1]:.0f} img/s", flush=True)
    ratio = statistics.median(x / y for x, y in zip(a, b))
    speedup = statistics.median(l / y for l, y in zip(loader, b))
    print(f"{args.model}, {args.images} images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, lightning {L.__version__}")
    ok1, ok2 = ratio >= 0.97, speedup >= 10
    print(f"framework overhead: lightning/plain images/s = {ratio:.3f} (target >= 0.97) {'PASS' if ok1 else 'FAIL'}")
    print(f"data path: loader/step images/s = {speedup:.1f}x (target >= 10x) {'PASS' if ok2 else 'FAIL'}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
