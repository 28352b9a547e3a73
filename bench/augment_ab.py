"""Batch augmentation, this tree's against a commit's: kernel-launching operators per batch (on a
GPU each is at least one launch, which is what a 48×48 batch's augmentation costs there), all the
operators dispatched (views included) and the
loader path's images/s on this machine (index, float, augment, normalise: the data module's
``model_input``), alternating the two.

    python bench/augment_ab.py --base 6539083
    python bench/augment_ab.py --base HEAD --chunked   # this tree through the training loader's
                                                       # GPU chunks (ChunkedBatches) vs batch by batch
"""

import argparse
import importlib.util
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fer_lightning.data.augment import BatchAugment  # noqa: E402
from fer_lightning.data.base import ChunkedBatches, ShuffledBatches, gpu_chunk, model_input  # noqa: E402

VIEWS = {"slice", "select", "unsqueeze", "view", "expand", "as_strided", "transpose", "permute", "reshape",
         "t", "alias", "detach", "narrow", "split", "split_with_sizes", "unbind"}
RECIPES = {"default": {}, "pad_crop 4 + erase_p 0.5": {"pad_crop": 4, "erase_p": 0.5}}


def load_base(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:fer_lightning/data/augment.py"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "base_augment.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("base_augment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.BatchAugment


def loader(images, aug, batch, n, chunked=False):
    if chunked:  # the training loader as on a GPU: n batches (whole chunks for the counts below)
        labels = torch.zeros(len(images), dtype=torch.int64)
        batches = ChunkedBatches(images, labels, ShuffledBatches(len(images), batch, seed=0),
                                 lambda x: model_input(x, aug), chunk=gpu_chunk(batch, images[0].numel()))
        for _ in itertools.islice(batches, n):
            pass
        return
    perm = torch.randperm(len(images))
    for i in range(n):
        model_input(images[perm[i * batch:(i + 1) * batch]], aug)


def op_counts(images, aug, batch, chunked=False, n=56) -> tuple[float, float]:
    """Per batch: the kernel-launching operators, and all the operators dispatched (views too: on a
    GPU those cost CPU time between launches, though they launch nothing). 56 batches: whole
    chunks of the training loader at batch 64 (28) and 256 (7)."""
    loader(images, aug, batch, 3, chunked)  # warm-up (a pooled version draws its pool here)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loader(images, aug, batch, n, chunked)
    top = [e.name for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
    return sum(1 for name in top if name[6:] not in VIEWS) / n, len(top) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--batches", type=int, default=56)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunked", action="store_true",
                    help="run this tree's side through the training loader (ChunkedBatches)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base_cls = load_base(args.base)
    images = torch.randint(0, 256, (28709, 1, 48, 48), dtype=torch.uint8)  # FER2013 Training's size
    for label, kw in RECIPES.items():
        for batch in (64, 256):
            augs = {"base": base_cls(**kw), "this": BatchAugment(**kw)}
            chunked = {"base": False, "this": args.chunked}
            ops = {k: op_counts(images, a, batch, chunked[k]) for k, a in augs.items()}
            times = {k: [] for k in augs}
            for _ in range(args.rounds):
                for k, a in augs.items():
                    t0 = time.perf_counter()
                    loader(images, a, batch, args.batches, chunked[k])
                    times[k].append(time.perf_counter() - t0)
            rate = {k: args.batches * batch / statistics.median(v) for k, v in times.items()}
            print(f"{label}, batch {batch}: kernel ops per batch {ops['base'][0]:.1f} -> {ops['this'][0]:.1f}, "
                  f"all ops {ops['base'][1]:.1f} -> {ops['this'][1]:.1f}; "
                  f"loader {rate['base']:.0f} -> {rate['this']:.0f} img/s (1 thread, median of {args.rounds}): "
                  f"{rate['this'] / rate['base']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
