"""Framework overhead, data path and speed switches, measured side by side in one run.

1. Overhead: (a) our ClassifierModule + TensorDataModule through the Lightning Trainer and (b) a
   minimal hand-written PyTorch loop train the same model on the same batches (same sampler,
   augmentation, normalisation, optimiser, memory layout and seed). Epochs alternate a, b, a, b,
   ... and the ratio of median images/s is reported (target >= 0.97).
   The same with the module's ``steps_per_execution`` (``--steps-per-execution``, 7 by default:
   Lightning's per-step work once per 7 optimiser steps), in the same alternating rounds.
   The same loops on ``TinyNet`` (a step that is nearly all overhead) give the framework's
   own time per step, in microseconds, and further loops (our module without its ``__setattr__``
   fast path; with manual optimisation; with ``steps_per_execution``) what each changes of it.
2. Data path, for every model: the loader alone (batching + augmentation + normalisation on the
   device, at the model's input size) vs the model's training step (target: loader >= 10x faster).
3. Switches (``--switches``): channels_last, bf16 autocast (``precision: bf16-mixed``) and
   ``torch.compile`` (``model.compile``; on a GPU also its CUDA-graph mode ``reduce-overhead``),
   each as a ratio of Lightning images/s to the same run without it; then the overhead ratio of 1.
   again with the net compiled in both loops (``reduce-overhead`` on a GPU). On a GPU, utilisation
   during the timed Lightning epochs is sampled with nvidia-smi.

    python bench/overhead.py [--device auto] [--model CNN2] [--images 4096] [--rounds 7] [--switches]
    python bench/overhead.py --only compiled     # one part alone (repeatable): overhead, step,
                                                 # datapath, switches, compiled
"""

import argparse
import functools
import itertools
import statistics
import subprocess
import sys
import threading
import time

import lightning as L
import torch
import torch.nn.functional as F

from fer_lightning.data import BatchAugment, SyntheticFacesDataModule
from fer_lightning.data.base import ChunkedBatches, ShuffledBatches, model_input
from fer_lightning.models import CNN1, CNN2, CNN3, MultiScaleAttentionCNN, ResNet, TorchvisionNet, VGG1x1, VGGNet
from fer_lightning.module import ClassifierModule

# name -> (factory, input side the data module delivers, training batch size)
MODELS = {
    "CNN1": (CNN1, 48, 256), "CNN2": (CNN2, 48, 256), "CNN3": (CNN3, 48, 256),
    "VGG1x1": (VGG1x1, 48, 64), "VGGNet": (VGGNet, 48, 64), "ResNet18": (ResNet, 48, 64),
    "MultiScaleAttentionCNN": (MultiScaleAttentionCNN, 128, 32),
    # paper 004's net at FER2013's own size, as the CPU runs train it (the same face, 48/128 the pixels)
    "MultiScaleAttentionCNN@48": (lambda: MultiScaleAttentionCNN(input_size=48), 48, 32),
    # configs/models/vgg_small.yaml, the CPU recipe's narrow VGG
    "VGGNet-narrow": (lambda: VGGNet(widths=[16, 32, 64, 128], fc=[128], dropout=0.0), 48, 64),
    # fer2013_cpu_best.yaml's 1.8 M-parameter VGG, our best single-network recipe
    "VGGNet-best": (lambda: VGGNet(widths=[32, 64, 128, 256], fc=[256], dropout=0.0), 48, 64),
    "MobileNetV2@224": (lambda: TorchvisionNet("mobilenet_v2", input_size=224), 48, 32),
}
# bench parts, in the order they run (--only)
PARTS = ("overhead", "step", "datapath", "switches", "compiled")


class TinyNet(torch.nn.Module):
    """A linear model on 8×8-pooled faces: its step is almost all per-step overhead, so the two
    loops' difference per step is the framework's own cost."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(36, 16))
        self.classifier = torch.nn.Linear(16, 7)

    def forward(self, x):
        return self.classifier(self.features(x))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class _EpochTimer(L.Callback):
    """Times each epoch; ``util`` (a GPUUtilisation) samples during the last one only."""

    def __init__(self, util=None):
        self.util = util

    def _sampling(self, trainer):
        return self.util is not None and trainer.current_epoch == trainer.max_epochs - 1

    def on_train_epoch_start(self, trainer, pl_module):
        _sync(pl_module.device)
        if self._sampling(trainer):
            self.util.__enter__()
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.t0
        if self._sampling(trainer):
            self.util.__exit__(None, None, None)


class _SlowSetattr(ClassifierModule):
    """ClassifierModule without its ``__setattr__`` fast path, to measure what that saves."""

    __setattr__ = torch.nn.Module.__setattr__


class _ManualOptimisation(ClassifierModule):
    """ClassifierModule stepping its optimiser itself (Lightning's manual optimisation), to measure
    what Lightning's automatic-optimisation closure costs per step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self._training_loss(batch, batch_idx)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()


def lightning_epoch(factory, dm, seed, device, precision="32-true", compile: bool | str = False,
                    channels_last=True, epochs=1, module_cls=ClassifierModule, util=None,
                    steps_per_execution=1) -> float:
    """Seconds of the last of ``epochs`` epochs (``util``: GPU utilisation sampled during it)."""
    torch.manual_seed(seed)
    module = module_cls(factory(), compile=compile, channels_last=channels_last,
                        steps_per_execution=steps_per_execution)
    timer = _EpochTimer(util)
    trainer = L.Trainer(max_epochs=epochs, accelerator=device.type, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.seconds


def _device_split(dm, device):
    x, y = dm.split("train")
    return x.to(device), y.to(device)


def _training_batches(dm, device):
    """The batches the data module's training loader yields (epoch 0), made ready on ``device`` in
    the same chunks: the plain loop's data path is the module's."""
    images, labels = _device_split(dm, device)
    sampler = ShuffledBatches(len(labels), dm.batch_size, dm.seed, device)
    return ChunkedBatches(images, labels, sampler, functools.partial(dm.batch_input, train=True))


def plain_epoch(factory, dm, seed, device, compile: bool | str = False, epochs=1) -> float:
    """Seconds of the last of ``epochs`` epochs of the hand-written loop (``compile`` as in
    ``model.compile``: the net through ``torch.compile``, a string being its mode)."""
    torch.manual_seed(seed)
    net = factory().to(device, memory_format=torch.channels_last)
    run_net = torch.compile(net, mode=compile if isinstance(compile, str) else None) if compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    batches = _training_batches(dm, device)  # the same epoch-0 batches in every epoch
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        for x, y in batches:
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(run_net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
    return time.perf_counter() - t0


def loader_rate(dm, device, batches=None) -> float:
    """Images/s of batching + augmentation + normalisation alone (the training loader's epoch)."""
    loader = _training_batches(dm, device)
    n = 0
    _sync(device)
    t0 = time.perf_counter()
    for _, y in itertools.islice(loader, batches):  # timed by the sync below
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t0)


def loader_profile(dm, device, batches: int = 20) -> str:
    """Where one loader batch's time goes (torch.profiler): its wall time, the CPU time of the ops
    it dispatches, and on a GPU its kernels and their busy time. A loader bound by launches shows
    a wall time far above the kernels' busy time."""
    from torch.profiler import ProfilerActivity, profile

    loader = _training_batches(dm, device)
    for _ in loader:  # warm-up: the parameter pool, first-call costs
        pass
    epochs = -(-batches // len(loader))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        n = sum(1 for _ in range(epochs) for _ in loader)
        _sync(device)
        wall = (time.perf_counter() - t0) / n * 1e6
    events = prof.key_averages()
    cpu_ops = sum(e.count for e in events if e.key.startswith("aten::")) / n
    line = f"{wall:.0f} us wall per batch (under the profiler), {cpu_ops:.0f} aten ops dispatched"
    if device.type == "cuda":
        cuda = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = sum(e.count for e in cuda) / n
        busy = sum(getattr(e, "self_device_time_total", 0) for e in cuda) / n
        line += f", {kernels:.1f} kernels busy {busy:.0f} us"
    return line


def step_rate(factory, dm, device, batches: int) -> float:
    """Images/s of forward + backward + optimiser step on ready (augmented) batches."""
    net = factory().to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, labels = _device_split(dm, device)
    idx = torch.arange(dm.batch_size, device=device)
    x = model_input(images[idx], dm.augment).contiguous(memory_format=torch.channels_last)
    y = labels[idx]

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    _sync(device)
    return batches * dm.batch_size / (time.perf_counter() - t0)


class GPUUtilisation:
    """Samples nvidia-smi's utilisation.gpu every 0.2 s while in the ``with`` block."""

    def __init__(self):
        self.blocks = []  # the samples of each `with` block

    def __enter__(self):
        self.blocks.append([])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self.blocks[-1],), daemon=True)
        self._thread.start()
        return self

    def _run(self, samples):
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(torch.cuda.current_device())], capture_output=True, text=True,
                                     timeout=5).stdout
                samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self):
        # each block's first and last samples straddle its start and end
        core = [x for block in self.blocks for x in (block[1:-1] or block)]
        return statistics.mean(core) if core else float("nan")


def median_ratio(a, b) -> float:
    """The median over rounds of a's images/s over b's, each round's pair measured side by side."""
    return statistics.median(x / y for x, y in zip(a, b))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--model", default="CNN2", choices=list(MODELS),
                    help="the net of the overhead, switch and compiled checks (the data path times every net)")
    # 7 rounds of 4,096 images rather than 3 of 8,192 (2026-12-07): about as many images per loop,
    # but that day's machine drifted within minutes (the plain loop alone: 259–376 img/s over 7
    # rounds), and a median of 3 read the same code as 0.870 where 7 shorter rounds read 1.061
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, help="default: the model's training batch (256 for CNN1-3)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tiny-rounds", type=int, default=7, help="rounds of the TinyNet framework-time check")
    ap.add_argument("--step-batches", type=int, default=3, help="batches timed per model in the data-path check")
    ap.add_argument("--steps-per-execution", type=int, default=7,
                    help="model.steps_per_execution of the second Lightning loop in the overhead checks (1: none)")
    ap.add_argument("--switches", action="store_true", help="also measure channels_last, bf16 and torch.compile")
    ap.add_argument("--only", action="append", choices=PARTS,
                    help="run only this part (repeatable); default: overhead, step, datapath (+ switches, "
                         "compiled with --switches)")
    args = ap.parse_args(argv)
    # a GPU lease has minutes: the parts measured already can be left out (bench/gpu_lease.sh)
    parts = set(args.only or PARTS[:3] + (PARTS[3:] if args.switches else ()))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    factory, side, batch = MODELS[args.model]
    args.batch_size = args.batch_size or batch
    dm = SyntheticFacesDataModule(num_train=args.images, num_val=64, num_test=64, image_size=side,
                                  batch_size=args.batch_size, augment=BatchAugment())
    dm.setup()
    lightning_epoch(factory, dm, 0, device)  # warm-up (allocator, first-call costs)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, {args.images} images, batch {args.batch_size}, {name}, "
          f"torch {torch.__version__}, lightning {L.__version__}", flush=True)
    results = []
    if "overhead" in parts:
        overhead(factory, dm, device, args, results)
    if "step" in parts:
        framework_time_per_step(device, args)
    if "datapath" in parts:
        data_path(device, args, results)
    if "switches" in parts:
        switches(factory, dm, device, args)
    if "compiled" in parts:
        compiled_overhead(factory, dm, device, args)
    return 0 if all(results) else 1


def overhead(factory, dm, device, args, results):
    a, b, fused = [], [], []
    k = args.steps_per_execution
    util = GPUUtilisation() if device.type == "cuda" else None
    for r in range(args.rounds):
        a.append(args.images / lightning_epoch(factory, dm, r, device, util=util))
        b.append(args.images / plain_epoch(factory, dm, r, device))
        if k > 1:
            fused.append(args.images / lightning_epoch(factory, dm, r, device, steps_per_execution=k))
        print(f"round {r}: lightning {a[-1]:.0f} img/s, plain loop {b[-1]:.0f} img/s"
              + (f", lightning with steps_per_execution={k} {fused[-1]:.0f} img/s" if fused else ""), flush=True)
    ratio = median_ratio(a, b)
    results.append(ratio >= 0.97)
    print(f"framework overhead: lightning/plain images/s = {ratio:.3f} (target >= 0.97) {verdict(results[-1])}",
          flush=True)
    if fused:
        ratio = median_ratio(fused, b)
        print(f"framework overhead with model.steps_per_execution={k}: lightning/plain images/s = {ratio:.3f} "
              f"(target >= 0.97) {verdict(ratio >= 0.97)}", flush=True)
    if util:
        results.append(util.mean >= 90)
        print(f"GPU utilisation during Lightning epochs: {util.mean:.0f} % (target >= 90 %) {verdict(results[-1])}",
              flush=True)


def framework_time_per_step(device, args):
    tiny = SyntheticFacesDataModule(num_train=16384, num_val=8, num_test=8, batch_size=32, augment=BatchAugment())
    tiny.setup()
    lightning_epoch(TinyNet, tiny, 0, device)  # warm-up
    steps = len(_training_batches(tiny, device))
    # Epochs of the three loops alternate; each round's differences are taken within the round. One
    # thread: two threads make a step this small slower and far noisier on the 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    k = max(2, args.steps_per_execution)
    extra, saved, manual, fused = [], [], [], []
    for r in range(args.tiny_rounds):
        plain = plain_epoch(TinyNet, tiny, r, device)
        fast = lightning_epoch(TinyNet, tiny, r, device)
        slow = lightning_epoch(TinyNet, tiny, r, device, module_cls=_SlowSetattr)
        by_hand = lightning_epoch(TinyNet, tiny, r, device, module_cls=_ManualOptimisation)
        grouped = lightning_epoch(TinyNet, tiny, r, device, steps_per_execution=k)
        extra.append((fast - plain) / steps * 1e6)
        saved.append((slow - fast) / steps * 1e6)
        manual.append((fast - by_hand) / steps * 1e6)
        fused.append((grouped - plain) / steps * 1e6)
    torch.set_num_threads(threads)
    print(f"framework time per step (TinyNet, batch 32, {steps} steps, 1 thread, median of {args.tiny_rounds}): "
          f"{statistics.median(extra):.0f} us more than the plain loop (measured); ClassifierModule's "
          f"__setattr__ fast path saves {statistics.median(saved):.0f} us of it; manual optimisation "
          f"would save {statistics.median(manual):.0f} us; with model.steps_per_execution={k}: "
          f"{statistics.median(fused):.0f} us more than the plain loop", flush=True)


def data_path(device, args, results):
    for model, (make, side, batch) in MODELS.items():
        # 32 batches: several of the training loader's chunks, as in a FER2013 epoch
        mdm = SyntheticFacesDataModule(num_train=32 * batch, num_val=8, num_test=8, image_size=side,
                                       batch_size=batch, augment=BatchAugment())
        mdm.setup()
        load = loader_rate(mdm, device)
        step = step_rate(make, mdm, device, args.step_batches)
        results.append(load >= 10 * step)
        print(f"data path {model} ({side}x{side}, batch {batch}): loader {load:.0f} img/s, step {step:.0f} img/s, "
              f"loader/step = {load / step:.1f}x (target >= 10x) {verdict(results[-1])}", flush=True)
        if model == "CNN2":  # the loader nearest its target: where a batch's time goes
            try:
                profiled = loader_profile(mdm, device)
            except Exception as e:  # a profiler API that differs on the device's torch: the rest still runs
                profiled = f"failed ({type(e).__name__}: {e})"
            print(f"loader profile {model} ({side}x{side}, batch {batch}): {profiled}", flush=True)


def switches(factory, dm, device, args):
    base = args.images / lightning_epoch(factory, dm, 0, device)
    runs = {"channels_last off (ratio: on/off)": dict(channels_last=False),
            "bf16 autocast": dict(precision="bf16-mixed"), "torch.compile": dict(compile=True)}
    if device.type == "cuda":  # CUDA graphs: a GPU-only mode
        runs["torch.compile reduce-overhead (CUDA graphs)"] = dict(compile="reduce-overhead")
    for label, kw in runs.items():
        # torch.compile compiles during the first epoch: time the second one
        rate = args.images / lightning_epoch(factory, dm, 0, device, epochs=2 if kw.get("compile") else 1, **kw)
        if "off" in label:
            print(f"switch {label}: {base / rate:.2f}x", flush=True)
        else:
            print(f"switch {label}: {rate / base:.2f}x the images/s without it", flush=True)


def compiled_overhead(factory, dm, device, args):
    # The overhead figure again with the net compiled in both loops: on a GPU, CUDA graphs
    # (the mode for small CNNs there) take the kernel launches out of the CPU's per-step work,
    # so whether Lightning's remaining per-step Python still shows is what this measures.
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    k = args.steps_per_execution
    graphs, plain, fused, util = [], [], [], GPUUtilisation() if device.type == "cuda" else None
    for r in range(args.rounds):
        graphs.append(args.images / lightning_epoch(factory, dm, r, device, compile=mode, epochs=2, util=util))
        plain.append(args.images / plain_epoch(factory, dm, r, device, compile=mode, epochs=2))
        if k > 1:
            fused.append(args.images / lightning_epoch(factory, dm, r, device, compile=mode, epochs=2,
                                                       steps_per_execution=k))
        print(f"compiled round {r}: lightning {graphs[-1]:.0f} img/s, plain loop {plain[-1]:.0f} img/s"
              + (f", lightning with steps_per_execution={k} {fused[-1]:.0f} img/s" if fused else ""), flush=True)
    for label, rates in (("", graphs), (f" with model.steps_per_execution={k}", fused)):
        if rates:
            ratio = median_ratio(rates, plain)
            rounds = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(rates, plain))
            print(f"framework overhead{label}, net compiled ({mode}) in both loops, 2nd epoch: lightning/plain "
                  f"images/s = {ratio:.3f} (rounds: {rounds} img/s; target >= 0.97) {verdict(ratio >= 0.97)}",
                  flush=True)
    if util:
        print(f"GPU utilisation during those Lightning epochs: {util.mean:.0f} % (target >= 90 %) "
              f"{verdict(util.mean >= 90)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
