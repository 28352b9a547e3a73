"""Run a pipeline: stages in topological order, each skipped when nothing it depends on changed.

A stage's *key* hashes its kind, its resolved config, the content hashes of its inputs (recorded
in the upstream manifests), the content of data files its config names, and the product version.
A stage is done when ``<out>/<stage>/manifest.json`` holds that key and every output still has its
recorded hash. The manifest is removed before a stage runs and written (atomically) only after it
finished, so an interrupted stage never looks finished; a re-run of an interrupted training stage
resumes from its ``last.ckpt``.
"""

import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

import fer_lightning
from fer_lightning.artifacts import (atomic_write_json, atomic_write_text, fingerprint_path, sha256_file,
                                    sha256_json)
from fer_lightning.errors import UserError
from fer_lightning.pipeline.spec import Pipeline, Stage, iter_refs


@dataclass
class StageContext:
    """What a stage's ``run`` receives."""
    name: str
    kind: str
    out_dir: Path
    config: dict
    inputs: object          # the declared structure with every reference replaced by a path
    input_refs: dict        # reference ("cnn1.checkpoint") -> path, for lineage
    input_hashes: dict      # reference -> sha256 of that artifact
    pipeline: str
    group: str              # W&B group: one per pipeline invocation
    key: str

    def output(self, name: str) -> Path:
        from stages import KINDS

        return self.out_dir / KINDS[self.kind].OUTPUTS[name]


def _code_version() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(fer_lightning.__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {"fer_lightning": fer_lightning.__version__, "git": sha or None}


class _Fingerprints:
    """Content hashes of data files named in configs, re-hashed only when size or mtime change."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.cache = json.loads(path.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def of(self, p: Path) -> str:
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.cache.get(str(p))
        if hit and hit[0] == stamp:
            return hit[1]
        digest = fingerprint_path(p)
        self.cache[str(p)] = [stamp, digest]
        atomic_write_json(self.path, self.cache)
        return digest


def _data_deps(config: dict, fingerprints: _Fingerprints) -> dict:
    """Paths named in the data module's init_args (or a ``data`` path): their content is an input
    of the stage."""
    data = config.get("data")
    args = {"data": data} if isinstance(data, str) else ((data or {}).get("init_args") or {})
    deps = {}
    for k, v in sorted(args.items()):
        if isinstance(v, str) and v and Path(v).exists():
            deps[k] = fingerprints.of(Path(v).resolve())
    return deps


def _input_refs(stage: Stage, out_root: Path) -> dict:
    """``{"cnn1.checkpoint": (path, sha256)}`` from the upstream manifests."""
    refs = {}
    for ref in iter_refs(stage.inputs):
        up, _, out = ref.partition(".")
        o = _read_manifest(out_root / up)["outputs"][out]
        refs[ref] = (out_root / up / o["path"], o["sha256"])
    return refs


def _stage_key(stage: Stage, refs: dict, version: dict, fingerprints: "_Fingerprints") -> str:
    return sha256_json({
        "kind": stage.kind, "config": stage.config, "version": version["fer_lightning"],
        "inputs": {r: sha for r, (_, sha) in refs.items()},
        "data": _data_deps(stage.config, fingerprints),
    })


def _substitute(inputs, refs: dict):
    """The declared inputs structure with each reference replaced by its path."""
    if isinstance(inputs, str):
        return str(refs[inputs][0])
    if isinstance(inputs, list):
        return [_substitute(x, refs) for x in inputs]
    if isinstance(inputs, dict):
        return {k: _substitute(v, refs) for k, v in inputs.items()}
    return None


def _read_manifest(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _check_done(stage_dir: Path, key: str) -> tuple[bool, str]:
    m = _read_manifest(stage_dir)
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


def _needs_own_process(stage: Stage) -> bool:
    """Lightning's DDP launcher re-executes ``sys.argv``; such a stage gets a process of its own."""
    t = stage.config.get("trainer") or {}
    strategy = str(t.get("strategy", ""))
    return "ddp" in strategy and "spawn" not in strategy and (
        t.get("num_nodes", 1) != 1 or t.get("devices") not in (None, 1, "1", "auto"))


def execute(ctx: StageContext) -> dict:
    """Run one stage in this process; returns its summary metrics."""
    from stages import KINDS

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return KINDS[ctx.kind].run(ctx) or {}
    except FloatingPointError as e:  # NaN/inf loss: a user-fixable failure, reported in one line
        raise UserError(f"stage '{ctx.name}' stopped: {e}") from None


@contextmanager
def _disk_errors_as_user_errors(stage: str):
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise UserError(f"stage '{stage}': cannot write {e.filename or 'an artifact'}: {e.strerror}; "
                            f"free space or fix permissions, then re-run (finished stages are kept)") from None
        raise


def is_rank_zero() -> bool:
    """True in the first process of a stage (multi-process DDP launches one per device)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def run_stage_job(job_path: str) -> int:
    """Entry of ``fer-lightning _stage job.json`` (a stage in its own process)."""
    job = json.loads(Path(job_path).read_text())
    job["out_dir"] = Path(job["out_dir"])
    metrics = execute(StageContext(**job))
    if is_rank_zero():
        atomic_write_json(Path(job_path).with_suffix(".result.json"), metrics)
    return 0


def _execute_in_process_or_child(ctx: StageContext, own_process: bool) -> dict:
    if not own_process:
        return execute(ctx)
    job = ctx.out_dir / "job.json"
    d = asdict(ctx)
    d["out_dir"] = str(ctx.out_dir)
    atomic_write_json(job, d)
    result = job.with_suffix(".result.json")
    result.unlink(missing_ok=True)
    rc = subprocess.call([sys.executable, "-m", "fer_lightning", "_stage", str(job)])
    if rc != 0 or not result.is_file():
        raise UserError(f"stage '{ctx.name}' failed in its own process (exit code {rc}); see its output above")
    return json.loads(result.read_text())


@contextmanager
def _lock(out_root: Path):
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        f = open(out_root / ".lock", "w")
    except OSError as e:
        raise UserError(f"{out_root}: output directory is not writable ({e.strerror}); pass --out DIR")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"{out_root}: another pipeline run is using this output directory; wait for it "
                        f"or pass another --out")
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def run_pipeline(pipe: Pipeline, out_root, only=(), from_stage=None, force=False, dry_run=False,
                 log=print) -> dict:
    """Run (or, with ``dry_run``, plan) the pipeline; returns ``{stage: status}``."""
    out_root = Path(out_root).resolve()
    only = _expand_names(pipe, only)
    from_stages = _expand_names(pipe, [from_stage] if from_stage else [])
    forced = set(pipe.stages) if force else set()
    for s in from_stages:
        forced |= {s} | _descendants(pipe, s)
    with _lock(out_root):
        fingerprints = _Fingerprints(out_root / ".fingerprints.json")
        group = f"{pipe.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        version = _code_version()
        statuses, reran = {}, set()
        t_all = time.time()
        for name, stage in pipe.stages.items():
            stage_dir = out_root / name
            if dry_run and any(d in reran for d in stage.deps):
                statuses[name] = "run"
                log(f"[run]    {name:<14} ({stage.kind}) upstream will re-run")
                reran.add(name)
                continue
            refs = _input_refs(stage, out_root) if all(statuses[d] != "skipped" for d in stage.deps) else None
            key = None if refs is None else _stage_key(stage, refs, version, fingerprints)
            done, why = _check_done(stage_dir, key) if key else (False, "inputs not finished")
            selected = not only or name in only
            if only and not selected:
                statuses[name] = "cached" if done else "skipped"
                if not done:
                    log(f"[skip]   {name:<14} ({stage.kind}) not selected ({why})")
                continue
            if key is None:
                missing = [d for d in stage.deps if statuses[d] == "skipped"]
                raise UserError(f"stage '{name}' needs {', '.join(missing)}, not finished yet; run "
                                f"{'them' if len(missing) > 1 else 'it'} first (drop --only)")
            if name in forced:
                done, why = False, "forced"
            if done:
                statuses[name] = "cached"
                log(f"[cached] {name:<14} ({stage.kind})")
                continue
            log(f"[run]    {name:<14} ({stage.kind}) {why}")
            statuses[name] = "run"
            reran.add(name)
            if dry_run:
                continue
            (stage_dir / "manifest.json").unlink(missing_ok=True)
            if name in forced:
                (stage_dir / "run_key").unlink(missing_ok=True)  # forced: start over, no resume
            ctx = StageContext(name=name, kind=stage.kind, out_dir=stage_dir, config=stage.config,
                               inputs=_substitute(stage.inputs, refs),
                               input_refs={r: str(p) for r, (p, _) in refs.items()},
                               input_hashes={r: sha for r, (_, sha) in refs.items()}, pipeline=pipe.name,
                               group=group, key=key)
            t0 = time.time()
            with _disk_errors_as_user_errors(name):
                stage_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(stage_dir / "config.yaml", yaml.safe_dump(stage.config, sort_keys=False))
                metrics = _execute_in_process_or_child(ctx, _needs_own_process(stage))
                _write_manifest(ctx, stage, metrics, version, t0)
            log(f"         {name:<14} done in {time.time() - t0:.1f}s")
        if not dry_run:
            log(f"pipeline {pipe.name}: {sum(s == 'run' for s in statuses.values())} stage(s) run, "
                f"{sum(s == 'cached' for s in statuses.values())} cached, {time.time() - t_all:.1f}s; "
                f"outputs in {out_root}")
        return statuses


def _expand_names(pipe: Pipeline, names) -> list:
    """Stage names as given on the command line; ``mobilenet`` also means all its foreach copies."""
    out = []
    for s in names:
        copies = [n for n in pipe.stages if n == s or n.startswith(f"{s}@")]
        if not copies:
            raise UserError(f"unknown stage '{s}' (stages: {', '.join(pipe.stages)})")
        out += copies
    return out


def _descendants(pipe: Pipeline, name: str) -> set:
    out, changed = set(), True
    while changed:
        changed = False
        for s in pipe.stages.values():
            if s.name not in out and (name in s.deps or out & set(s.deps)):
                out.add(s.name)
                changed = True
    return out


def _write_manifest(ctx: StageContext, stage: Stage, metrics: dict, version: dict, t0: float):
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
        "timings": {"finished": datetime.now(timezone.utc).isoformat(), "seconds": round(time.time() - t0, 2)},
    })
