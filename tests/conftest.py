import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never touch the network and never wait on W&B unless a test turns it on itself.
os.environ.setdefault("FER_WANDB", "off")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Under `pytest -n N` (make test) each worker gets a core of its own, before torch is imported:
# torch, the runner's thread count and every subprocess a test starts then see one core, and two
# workers never fight over the same one (two 2-thread torch processes on 2 cores run ~15x slower).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
if _WORKER.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_WORKER[2:]) % len(_cores)]})

# The demo pipeline shrunk to seconds: tiny synthetic splits, 1 epoch, narrow CNNs.
TINY_PIPELINE = """
base: {demo}
name: tiny
data:
  class_path: fer_lightning.data.SyntheticFacesDataModule
  init_args: {{num_train: 140, num_val: 70, num_test: 70, batch_size: 35}}
trainer: {{max_epochs: 1, enable_model_summary: false}}
stages:
  cnn1: {{params: {{model: {{net: {{init_args: {{widths: [4, 8, 8, 8, 8], fc: [16, 8, 8]}}}}}}}}}}
  cnn2: {{params: {{model: {{net: {{init_args: {{widths: [4, 8, 8, 8], fc: [16, 8]}}}}}}}}}}
  cnn3: {{params: {{model: {{net: {{init_args: {{widths: [4, 4, 8, 8, 8, 8], fc: 16}}}}}}}}}}
  fusion: {{params: {{trainer: {{max_epochs: 1}}}}}}
"""


@pytest.fixture
def tiny_pipeline(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PIPELINE.format(demo=ROOT / "configs" / "pipelines" / "fer2013_fusion_demo.yaml"))
    return path


def run_pipeline_cli(pipeline, out, *extra) -> str:
    """``fer-lightning pipeline run`` as a user runs it, on a tiny pipeline: stages one after the
    other in this one process (``--jobs 1``: a stage process of its own would spend ~9 s importing
    torch and Lightning, more than a tiny stage trains) with 1 thread. Returns its stdout."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fer_lightning", "pipeline", "run", str(pipeline), "--out", str(out),
                           "--threads", "1", "--jobs", "1", *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def write_fer_csv(path: Path, rows) -> Path:
    """rows: (emotion, pixels list or str, usage) -> a Kaggle-format CSV (gzip if path ends .gz)."""
    import gzip

    lines = ["emotion,pixels,Usage"]
    for e, pix, u in rows:
        pix = pix if isinstance(pix, str) else " ".join(str(int(p)) for p in pix)
        lines.append(f"{e},{pix},{u}")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path
