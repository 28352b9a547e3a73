"""How pipeline time grows with the dataset size and with the number of base models.

Dataset: the paper-000 DAG (``configs/pipelines/fer2013_fusion.yaml``) on a FER2013 slice
repeated 1x, 2x, 4x (every split repeated, so training, prediction export and probes all grow).
Models: N base CNNs (CNN1, CNN2, CNN3, then CNN1 again with another seed, ...) + mean score fusion
+ SVM/KNN probes on all their features, at 1x. Per-stage seconds come from the stage manifests.

    python bench/growth.py --data fer2013.csv.gz [--rows 5000] [--epochs 1] [--scales 1 2 4] [--models 1 2 4]
    python bench/growth.py                 # synthetic faces (no data needed)

``--rows 0`` uses all of FER2013 (35,719 rows) as 1x: a GPU-sized run.
"""

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from common import ROOT, run_pipeline_cli, stage_seconds
PIPELINE = ROOT / "configs/pipelines/fer2013_fusion.yaml"
MODEL_CONFIGS = [ROOT / f"configs/models/cnn{i}.yaml" for i in (1, 2, 3)]


def repeated_csv(src: Path, rows: int, times: int, dst: Path) -> Path:
    """A FER2013 CSV with ``rows`` rows (80 % Training, 10 % each test split; all if 0), every
    split repeated ``times`` times."""
    opener = gzip.open if src.name.endswith(".gz") else open
    with opener(src, "rt") as f:
        header, *lines = f.read().splitlines()
    by_usage = {}
    for line in lines:
        by_usage.setdefault(line.rsplit(",", 1)[1], []).append(line)
    if rows:
        share = {"Training": 0.8, "PublicTest": 0.1, "PrivateTest": 0.1}
        by_usage = {u: ls[: int(rows * share[u])] for u, ls in by_usage.items()}
    with open(dst, "w") as f:
        f.write(header + "\n")
        for usage_lines in by_usage.values():
            for _ in range(times):
                f.write("\n".join(usage_lines) + "\n")
    return dst


def models_pipeline(n: int, data: dict, epochs: int, dst: Path) -> Path:
    stages = {}
    for i in range(n):
        stages[f"m{i + 1}"] = {"kind": "train", "config": str(MODEL_CONFIGS[i % 3]),
                               "params": {"seed_everything": i // 3}}
    names = list(stages)
    if n > 1:  # score fusion needs two members
        stages["score_fusion"] = {"kind": "score_fusion", "inputs": {"members": [f"{m}.probs" for m in names]},
                                  "params": {"methods": ["mean"]}}
    stages["probe"] = {"kind": "probe", "inputs": {"features": {m: f"{m}.features" for m in names}}}
    dst.write_text(yaml.safe_dump({"name": f"growth_{n}_models", "seed": 0, "data": data,
                                   "trainer": {"max_epochs": epochs, "accelerator": "auto", "devices": 1,
                                               "enable_progress_bar": False, "enable_model_summary": False},
                                   "stages": stages}, sort_keys=False))
    return dst


def run(pipeline: Path, out: Path, args: list[str]) -> tuple[float, dict]:
    return run_pipeline_cli(pipeline, out, args), stage_seconds(out)


def table(title: str, label: str, results: dict):
    stages = list(dict.fromkeys(s for _, st in results.values() for s in st))  # union, first-seen order
    base = next(iter(results.values()))[0]
    print(f"\n{title}\n| {label} | wall s | x of first | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 3) + "|")
    for k, (wall, st) in results.items():
        print(f"| {k} | {wall:.0f} | {wall / base:.2f} | " + " | ".join(f"{st[s]:.0f}" if s in st else "-" for s in stages) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="FER2013 .csv/.csv.gz (default: synthetic faces)")
    ap.add_argument("--rows", type=int, default=5000, help="rows of FER2013 at 1x (0: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--scales", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--models", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--jobs", default="auto")
    args = ap.parse_args(argv)
    common = ["--set", f"trainer.max_epochs={args.epochs}", "--jobs", args.jobs]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def data_for(scale: int) -> dict:
            if args.data:
                csv = repeated_csv(Path(args.data), args.rows, scale, tmp / f"fer_{scale}x.csv")
                return {"class_path": "fer_lightning.data.FER2013DataModule",
                        "init_args": {"csv_path": str(csv), "batch_size": 256, "cache_dir": str(tmp / "cache"),
                                      "augment": {"class_path": "fer_lightning.data.BatchAugment"}}}
            n = (args.rows or 35719) * scale
            return {"class_path": "fer_lightning.data.SyntheticFacesDataModule",
                    "init_args": {"num_train": int(n * 0.8), "num_val": int(n * 0.1), "num_test": int(n * 0.1),
                                  "batch_size": 256, "augment": {"class_path": "fer_lightning.data.BatchAugment"}}}

        sizes = {}
        for scale in args.scales:
            sets = [f"--set=data={json.dumps(data_for(scale))}", "--set=stages.report.params.splits=[test]"]
            sizes[f"{scale}x"] = run(PIPELINE, tmp / f"size{scale}", common + sets)
            print(f"{scale}x data: {sizes[f'{scale}x'][0]:.0f}s, stages {sizes[f'{scale}x'][1]}", flush=True)
        models = {}
        for n in args.models:
            p = models_pipeline(n, data_for(1), args.epochs, tmp / f"models{n}.yaml")
            models[str(n)] = run(p, tmp / f"models{n}", ["--jobs", args.jobs])
            print(f"{n} base models: {models[str(n)][0]:.0f}s, stages {models[str(n)][1]}", flush=True)
    src = f"FER2013 slice of {args.rows or 'all'} rows" if args.data else f"synthetic faces, {args.rows or 35719} at 1x"
    print(f"\n{src}, {args.epochs} epoch(s), jobs {args.jobs}, {len(os.sched_getaffinity(0))} cores")
    if sizes:
        table("Pipeline time vs dataset size (paper-000 DAG), stage seconds", "data", sizes)
    if models:
        table("Pipeline time vs number of base models (train + mean score fusion + probes), stage seconds",
              "models", models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
