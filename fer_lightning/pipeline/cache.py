"""When a stage is done: its key, the fingerprints of the data it reads, and its manifest.

A stage's *key* hashes its kind, its resolved config, the content hashes of its inputs (recorded
in the upstream manifests), the content of data files its config names, and the product version.
A stage is done when ``<out>/<stage>/manifest.json`` holds that key and every output still has its
recorded hash. The runner removes the manifest before a stage runs and writes it (atomically) only
after the stage finished, so an interrupted stage never looks finished.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import fer_lightning
from fer_lightning.artifacts import atomic_write_json, fingerprint_path, sha256_file, sha256_json
from fer_lightning.errors import UserError
from fer_lightning.pipeline.spec import Stage, is_file_ref, iter_refs

if TYPE_CHECKING:
    from fer_lightning.pipeline.processes import StageContext


def code_version() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(fer_lightning.__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {"fer_lightning": fer_lightning.__version__, "git": sha or None}


def stamp(p: Path):
    """What changes whenever ``p``'s content may have: a file's size and mtime; a folder's, those
    of every file under it (a folder's own mtime changes only when its direct entries do, so an
    image added to ``faces/happy/`` leaves ``faces/`` as it was)."""
    if not p.is_dir():
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for q in sorted(q for q in p.rglob("*") if q.is_file()):
        st = q.stat()
        h.update(f"{q.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class Fingerprints:
    """Content hashes of data files and folders named in configs, re-hashed only when their
    ``stamp`` changes, and stamped once per run (the 7,178 files of FER2013's test images take
    0.12 s to stamp here, and every stage that reads a folder asks)."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write = path, write  # a plan (dry run) reads the cache, writes nothing
        try:
            self.cache = json.loads(path.read_text())
        except (OSError, ValueError):
            self.cache = {}
        if not isinstance(self.cache, dict):  # damaged: hashes are recomputed, nothing is lost
            self.cache = {}
        self.this_run = {}

    def of(self, p: Path) -> str:
        if str(p) not in self.this_run:
            self.this_run[str(p)] = self._digest(p)
        return self.this_run[str(p)]

    def _digest(self, p: Path) -> str:
        now = stamp(p)
        hit = self.cache.get(str(p))
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == now and isinstance(hit[1], str):
            return hit[1]
        digest = fingerprint_path(p)
        self.cache[str(p)] = [now, digest]
        if self.write:
            atomic_write_json(self.path, self.cache)
        return digest


def _model_files(cfg, key: str = "model"):
    """``(dotted key, path)`` of every string in a model config that names a file, such as a
    backbone's local ``weights: imagenet.pth``, however deep in the nesting."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            yield from _model_files(v, f"{key}.{k}")
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            yield from _model_files(v, f"{key}.{i}")
    elif isinstance(cfg, str) and cfg and Path(cfg).is_file():
        yield key, cfg


def data_deps(stage: Stage, fingerprints: Fingerprints) -> dict:
    """Paths named in the data module's init_args, the config keys the stage's kind declares
    as files (``FILE_PARAMS``, e.g. evaluate's ``data``) and files the model config names (local
    weights): their content is an input of the stage."""
    from stages import KINDS

    data = stage.config.get("data")
    args = dict((data.get("init_args") or {}) if isinstance(data, dict) else {})
    args.update({k: stage.config.get(k) for k in getattr(KINDS[stage.kind], "FILE_PARAMS", ())})
    args.update(_model_files(stage.config.get("model")))
    deps = {}
    for k, v in sorted(args.items()):
        if isinstance(v, str) and v and Path(v).exists():
            deps[k] = fingerprints.of(Path(v).resolve())
    return deps


def input_refs(stage: Stage, out_root: Path, fingerprints: Fingerprints) -> dict:
    """``{"cnn1.checkpoint": (path, sha256)}`` from the upstream manifests; a file input's hash
    is its content's."""
    refs = {}
    for ref in iter_refs(stage.inputs):
        if is_file_ref(ref):
            refs[ref] = (Path(ref), fingerprints.of(Path(ref)))
            continue
        up, _, out = ref.partition(".")
        o = read_manifest(out_root / up)["outputs"][out]
        refs[ref] = (out_root / up / o["path"], o["sha256"])
    return refs


def stage_key(stage: Stage, refs: dict, version: dict, fingerprints: Fingerprints,
              config: dict | None = None) -> str:
    return sha256_json({
        "kind": stage.kind, "config": stage.config if config is None else config,
        "version": version["fer_lightning"], "inputs": {r: sha for r, (_, sha) in refs.items()},
        "data": data_deps(stage, fingerprints),
    })


def resume_key(stage: Stage, refs: dict, version: dict, fingerprints: Fingerprints) -> str:
    """The key a training's ``last.ckpt`` must match to be resumed: the stage key without
    ``trainer.max_time``, which decides where a training stops, not what it trains — so a run
    stopped by its time limit continues when re-run with a longer one (the stage re-runs, since its
    cache key changed, and picks up from the checkpoint; Lightning's timer counts the earlier
    training too)."""
    config = copy.deepcopy(stage.config)
    if isinstance(config.get("trainer"), dict):
        config["trainer"].pop("max_time", None)
    return stage_key(stage, refs, version, fingerprints, config)


def read_manifest(stage_dir: Path) -> dict | None:
    """A stage's manifest, or ``None`` when it is missing or damaged (edited by hand, written by
    something else): either way the stage counts as not finished."""
    try:
        m = json.loads((stage_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    outputs = m.get("outputs") if isinstance(m, dict) else None
    if not isinstance(outputs, dict) or not all(
            isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("sha256"), str)
            and isinstance(o.get("bytes"), int) for o in outputs.values()):
        return None
    return m


def check_done(stage_dir: Path, key: str) -> tuple[bool, str]:
    m = read_manifest(stage_dir)
    if m is None:
        return False, "not run yet" if not stage_dir.exists() else "no finished run"
    if m.get("key") != key:
        return False, "config or inputs changed"
    for name, out in m["outputs"].items():
        p = stage_dir / out["path"]
        if not p.is_file():
            return False, f"output '{name}' is missing"
        if p.stat().st_size != out["bytes"] or sha256_file(p) != out["sha256"]:
            return False, f"output '{name}' changed on disk since the stage finished"
    return True, "unchanged"


def write_manifest(ctx: StageContext, stage: Stage, metrics: dict, version: dict, t0: float):
    from stages import KINDS

    outputs = {}
    for name, rel in KINDS[stage.kind].OUTPUTS.items():
        p = ctx.out_dir / rel
        if not p.is_file():
            raise UserError(f"stage '{ctx.name}' finished without writing its output '{name}' ({p})")
        outputs[name] = {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}
    atomic_write_json(ctx.out_dir / "manifest.json", {
        "stage": ctx.name, "kind": ctx.kind, "key": ctx.key,
        "config_hash": sha256_json(stage.config),
        "inputs": {r: {"path": p, "sha256": ctx.input_hashes[r]} for r, p in ctx.input_refs.items()},
        "outputs": outputs,
        "metrics": metrics, "code_version": version,
        "timings": {"started": datetime.fromtimestamp(t0, timezone.utc).isoformat(),
                    "finished": datetime.now(timezone.utc).isoformat(), "seconds": round(time.time() - t0, 2)},
    })
