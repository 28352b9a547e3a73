"""Run a pipeline: stages in topological order, each skipped when nothing it depends on changed.

A stage's *key* hashes its kind, its resolved config, the content hashes of its inputs (recorded
in the upstream manifests), the content of data files its config names, and the product version.
A stage is done when ``<out>/<stage>/manifest.json`` holds that key and every output still has its
recorded hash. The manifest is removed before a stage runs and written (atomically) only after it
finished, so an interrupted stage never looks finished; a re-run of an interrupted training stage
resumes from its ``last.ckpt``.
"""

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

import fer_lightning
from fer_lightning.artifacts import (atomic_write_json, atomic_write_text, fingerprint_path, output_dir,
                                    sha256_file, sha256_json)
from fer_lightning.errors import DISK_ERRNOS, UserError
from fer_lightning.pipeline.spec import Pipeline, Stage, is_file_ref, iter_refs, map_refs


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


def _stamp(p: Path):
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


class _Fingerprints:
    """Content hashes of data files and folders named in configs, re-hashed only when their
    ``_stamp`` changes, and stamped once per run (the 7,178 files of FER2013's test images take
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
        stamp = _stamp(p)
        hit = self.cache.get(str(p))
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp and isinstance(hit[1], str):
            return hit[1]
        digest = fingerprint_path(p)
        self.cache[str(p)] = [stamp, digest]
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


def _data_deps(stage: Stage, fingerprints: _Fingerprints) -> dict:
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


def _input_refs(stage: Stage, out_root: Path, fingerprints: "_Fingerprints") -> dict:
    """``{"cnn1.checkpoint": (path, sha256)}`` from the upstream manifests; a file input's hash
    is its content's."""
    refs = {}
    for ref in iter_refs(stage.inputs):
        if is_file_ref(ref):
            refs[ref] = (Path(ref), fingerprints.of(Path(ref)))
            continue
        up, _, out = ref.partition(".")
        o = _read_manifest(out_root / up)["outputs"][out]
        refs[ref] = (out_root / up / o["path"], o["sha256"])
    return refs


def _stage_key(stage: Stage, refs: dict, version: dict, fingerprints: "_Fingerprints") -> str:
    return sha256_json({
        "kind": stage.kind, "config": stage.config, "version": version["fer_lightning"],
        "inputs": {r: sha for r, (_, sha) in refs.items()},
        "data": _data_deps(stage, fingerprints),
    })


def _substitute(inputs, refs: dict):
    """The declared inputs structure with each reference replaced by its path."""
    return map_refs(inputs, lambda ref: str(refs[ref][0]))


def _read_manifest(stage_dir: Path) -> dict | None:
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
        if e.errno in DISK_ERRNOS:
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
    if os.environ.get("FER_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["FER_THREADS"]))
    metrics = execute(StageContext(**job))
    if is_rank_zero():
        atomic_write_json(Path(job_path).with_suffix(".result.json"), metrics)
    return 0


def _die_with_parent():  # Linux: a stage process must not outlive a runner killed with SIGKILL
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by _start_child around the fork
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_child(ctx: StageContext, env: dict | None = None, log_file: Path | None = None):
    """Start ``fer-lightning _stage job.json`` for ``ctx``; returns the Popen."""
    job = ctx.out_dir / "job.json"
    d = asdict(ctx)
    d["out_dir"] = str(ctx.out_dir)
    atomic_write_json(job, d)
    job.with_suffix(".result.json").unlink(missing_ok=True)
    out = open(log_file, "w") if log_file else None
    linux = sys.platform.startswith("linux")
    # Ctrl-C during the fork would raise KeyboardInterrupt inside the fork's handlers, which Python
    # only prints: held back until the child exists, it interrupts the runner as anywhere else.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if linux else None
    try:
        return subprocess.Popen([sys.executable, "-m", "fer_lightning", "_stage", str(job)],
                                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT if out else None,
                                preexec_fn=_die_with_parent if linux else None)
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if out:
            out.close()


def _child_result(ctx: StageContext, rc: int, log_file: Path | None = None) -> dict:
    result = ctx.out_dir / "job.result.json"
    if rc != 0 or not result.is_file():
        where = "see its output above"
        if log_file:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            where = f"last line: {tail[0].strip()!r}; full log: {log_file}"
        raise UserError(f"stage '{ctx.name}' failed in its own process (exit code {rc}); {where}")
    return json.loads(result.read_text())


def _execute_in_process_or_child(ctx: StageContext, own_process: bool) -> dict:
    if not own_process:
        return execute(ctx)
    return _child_result(ctx, _start_child(ctx).wait())


def _is_light(stage: Stage) -> bool:
    """A stage that trains nothing (score fusion, probes, reports) runs in the runner's process:
    a process of its own would cost more in imports (~7 s) than the stage itself, usually."""
    from stages import KINDS

    return "trainer" not in getattr(KINDS[stage.kind], "SHARED", ())


def dag_width(pipe: Pipeline) -> int:
    """The most stages that can run at once: stages per level, level = 1 + the deepest input."""
    level = {}
    for name, stage in pipe.stages.items():  # topological order
        level[name] = 1 + max((level[d] for d in stage.deps), default=-1)
    return max(list(level.values()).count(v) for v in set(level.values()))


def plan_slots(jobs, width: int) -> tuple[list[dict], int]:
    """Where independent stages run: the environment of each concurrent slot, and the CPU threads
    each stage gets. ``jobs``: ``"auto"`` or a number.

    auto: one slot per GPU when there are several; on a single GPU up to three stages side by side
    (one small CNN's training kept an H200 only 30 % busy: README, Performance); on the CPU one slot
    per stage that can run at once (the DAG's width), up to one more than the cores: with exactly
    one per core, the last stage of a round runs alone on its share of threads while the other
    cores idle (measured on 2 cores, README: Performance: two 1-thread stages side by side finish
    1.5x sooner than one after the other with 2 threads, and the demo's three CNNs in three
    1-thread slots 1.18x sooner than in two). A stage's thread count depends only on the plan, not
    on what else runs, so results do not depend on scheduling.
    """
    cores = fer_lightning.usable_cores()
    import torch

    gpus = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",")[:gpus] if visible else [str(i) for i in range(gpus)]
    n = job_count(jobs)
    if n is None:
        n = (gpus if gpus >= 2 else min(3, width)) if gpus else max(1, min(cores + 1, width))
    slots = [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} if len(ids) >= 2 else {} for i in range(n)]
    return slots, max(1, cores // n)


def job_count(jobs) -> int | None:
    """``jobs`` as a number of slots; None for ``"auto"``."""
    if jobs in (None, "auto"):
        return None
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(n) != str(jobs).strip():
        raise UserError(f"jobs: '{jobs}' (expected 'auto' or a number >= 1)")
    return n


@contextmanager
def _threads(n: int | None):
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _lock(out_root: Path):
    output_dir(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        f = open(out_root / ".lock", "w")
    except OSError as e:
        raise UserError(f"{out_root}: cannot write outputs there ({e.strerror}); pass another --out")
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
                 log=print, jobs=1, threads: int | None = None) -> dict:
    """Run (or, with ``dry_run``, plan) the pipeline; returns ``{stage: status}``.

    ``jobs``: how many independent stages may run at once (``"auto"``: decided from the devices,
    see :func:`plan_slots`); with more than one, stages that overlap run in processes of their own
    and write their output to ``<stage>/stage.log``. ``threads``: torch CPU threads per stage.
    """
    out_root = Path(out_root).resolve()
    job_count(jobs)  # a bad value fails before anything is planned
    only = _expand_names(pipe, only)
    from_stages = _expand_names(pipe, [from_stage] if from_stage else [])
    forced = set(pipe.stages) if force else set()
    for s in from_stages:
        forced |= {s} | _descendants(pipe, s)
    with _lock(out_root):
        fingerprints = _Fingerprints(out_root / ".fingerprints.json", write=not dry_run)
        group = f"{pipe.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        version = _code_version()
        statuses, reran = {}, set()
        t_all = time.time()
        checked = False

        def check_configs_once():
            """Before the first stage runs, check the config of every stage that may run after it:
            a typo in the last stage fails now, not after the others have trained."""
            nonlocal checked
            if checked:
                return
            checked = True
            from stages import KINDS

            may_run = {name: stage for name, stage in pipe.stages.items()
                       if statuses.get(name) not in ("cached", "skipped") and (not only or name in only)}
            for name, stage in may_run.items():
                check = getattr(KINDS[stage.kind], "check", None)
                if check:
                    check(name, stage.config, stage.inputs)
            if dry_run:
                return
            prepared = set()  # each data file is read once here, not by every stage started side by side
            for name, stage in may_run.items():
                prepare_data = getattr(KINDS[stage.kind], "prepare_data", None)
                if prepare_data:
                    prepare_data(name, stage.config, prepared)

        def prepare(name: str) -> StageContext | None:
            """Decide whether ``name`` runs (its deps are decided); the context to run it with."""
            stage, stage_dir = pipe.stages[name], out_root / name
            # a plan cannot hash inputs that an upstream stage has yet to remake
            upstream_reruns = dry_run and any(d in reran for d in stage.deps)
            if upstream_reruns:
                key, done, why = None, False, "upstream will re-run"
            else:
                ready = all(statuses[d] != "skipped" for d in stage.deps)
                refs = _input_refs(stage, out_root, fingerprints) if ready else None
                key = None if refs is None else _stage_key(stage, refs, version, fingerprints)
                done, why = _check_done(stage_dir, key) if key else (False, "inputs not finished")
            if only and name not in only:
                statuses[name] = "cached" if done else "skipped"
                if not done:
                    log(f"[skip]   {name:<14} ({stage.kind}) not selected ({why})")
                return None
            if upstream_reruns:
                check_configs_once()
                statuses[name] = "run"
                log(f"[run]    {name:<14} ({stage.kind}) {why}")
                reran.add(name)
                return None
            if key is None:
                missing = [d for d in stage.deps if statuses[d] == "skipped"]
                raise UserError(f"stage '{name}' needs {', '.join(missing)}, not finished yet; run "
                                f"{'them' if len(missing) > 1 else 'it'} first (drop --only)")
            if name in forced:
                done, why = False, "forced"
            if done:
                statuses[name] = "cached"
                log(f"[cached] {name:<14} ({stage.kind})")
                return None
            check_configs_once()
            log(f"[run]    {name:<14} ({stage.kind}) {why}")
            statuses[name] = "run"
            reran.add(name)
            if dry_run:
                return None
            (stage_dir / "manifest.json").unlink(missing_ok=True)
            if name in forced:
                (stage_dir / "run_key").unlink(missing_ok=True)  # forced: start over, no resume
            with _disk_errors_as_user_errors(name):
                stage_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(stage_dir / "config.yaml", yaml.safe_dump(stage.config, sort_keys=False))
            return StageContext(name=name, kind=stage.kind, out_dir=stage_dir, config=stage.config,
                                inputs=_substitute(stage.inputs, refs),
                                input_refs={r: str(p) for r, (p, _) in refs.items()},
                                input_hashes={r: sha for r, (_, sha) in refs.items()}, pipeline=pipe.name,
                                group=group, key=key)

        def finish(ctx: StageContext, metrics: dict, t0: float):
            with _disk_errors_as_user_errors(ctx.name):
                _write_manifest(ctx, pipe.stages[ctx.name], metrics, version, t0)
            log(f"         {ctx.name:<14} done in {time.time() - t0:.1f}s")

        def run_here(ctx: StageContext, n_threads):
            t0 = time.time()
            with _disk_errors_as_user_errors(ctx.name), _threads(n_threads):
                metrics = _execute_in_process_or_child(ctx, _needs_own_process(pipe.stages[ctx.name]))
            finish(ctx, metrics, t0)

        with _interrupts_win_over_stage_failures():
            if dry_run or str(jobs) == "1":
                for name in pipe.stages:
                    ctx = prepare(name)
                    if ctx is not None:
                        run_here(ctx, threads)
            else:
                _run_concurrently(pipe, prepare, finish, run_here, jobs, threads, log)
        if not dry_run:
            log(f"pipeline {pipe.name}: {sum(s == 'run' for s in statuses.values())} stage(s) run, "
                f"{sum(s == 'cached' for s in statuses.values())} cached, {time.time() - t_all:.1f}s; "
                f"outputs in {out_root}")
        return statuses


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (``kill``, a scheduler's stop, ``timeout``) ended the run."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _interrupts_win_over_stage_failures():
    """Ctrl-C reaches the stage processes too, which then fail, and a training in this process
    turns it into ``sys.exit(1)`` (Lightning's graceful shutdown): a run the user interrupted ends
    as :class:`Interrupted`, not as a stage failure. SIGTERM is taken the same way (Python would
    otherwise end this process at once, without a word)."""
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # someone else handles SIGINT here
        return
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    term = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    except (UserError, SystemExit, KeyboardInterrupt):
        if interrupted:
            raise Interrupted(interrupted[0]) from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, term)


def _stop_children(running: dict, grace: float = 15.0):
    """The run was interrupted: ask the stage processes still running to stop (SIGTERM; a training
    ends at its next batch, Lightning's graceful shutdown) and give them ``grace`` seconds, rather
    than leave them to the SIGKILL they get when this process exits."""
    procs = [r[0] for r in running.values() if r[0].poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass


def _run_concurrently(pipe: Pipeline, prepare, finish, run_here, jobs, threads, log):
    """Start every stage whose inputs are finished while a slot is free. Training stages that
    overlap run in processes of their own (one per slot); a stage that runs alone, or trains
    nothing, runs in this process."""
    pending, running, failed = list(pipe.stages), {}, []
    relayed = {}  # stage -> bytes of its log already looked through for progress lines
    slots, free, per_stage = None, [], threads
    try:
        while pending or running:
            ready = [] if failed else [n for n in pending
                                       if not any(d in pending or d in running for d in pipe.stages[n].deps)]
            progressed = False
            for name in ready:
                exclusive = _needs_own_process(pipe.stages[name])  # multi-process DDP: all devices, alone
                if running and exclusive:
                    continue
                if slots is not None and not free:
                    break
                pending.remove(name)
                progressed = True
                ctx = prepare(name)
                if ctx is None:
                    continue
                if slots is None:  # decided once there is something to run: imports torch
                    slots, planned = plan_slots(jobs, dag_width(pipe))
                    free, per_stage = list(range(len(slots))), threads or planned
                    if len(slots) > 1:
                        log(f"         running up to {len(slots)} stages at once, {per_stage} CPU thread(s) each")
                if exclusive or (not running and len(ready) == 1) or len(slots) == 1 or _is_light(pipe.stages[name]):
                    run_here(ctx, per_stage if len(slots) > 1 else threads)
                    continue
                slot = free.pop(0)
                env = {**slots[slot], "FER_THREADS": str(per_stage), "OMP_NUM_THREADS": str(per_stage)}
                log_file = ctx.out_dir / "stage.log"
                gpu = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
                log(f"         {name:<14} started in its own process{gpu}, log: {log_file}")
                running[name] = (_start_child(ctx, env, log_file), slot, ctx, log_file, time.time())
            if progressed:
                continue
            if not running:
                break
            while True:
                _relay_progress(running, relayed, log)
                if finished := [n for n, r in running.items() if r[0].poll() is not None]:
                    break
                time.sleep(0.2)
            for name in finished:
                proc, slot, ctx, log_file, t0 = running.pop(name)
                free.append(slot)
                try:
                    finish(ctx, _child_result(ctx, proc.returncode, log_file), t0)
                except UserError as e:
                    failed.append(e)
                    if running:
                        log(f"error: {e}; waiting for {', '.join(running)} to finish")
    except KeyboardInterrupt:
        _stop_children(running)
        raise
    if failed:
        raise failed[0]


def _relay_progress(running: dict, relayed: dict, log):
    """Echo the progress lines (``epoch 3/40: ...``, ClassifierModule._say_progress), warnings and
    resumes (``[cnn1] resuming from ...``) that stages in their own processes wrote to their logs
    since the last look, under the stage's name."""
    for name, (_, _, _, log_file, _) in running.items():
        try:
            with open(log_file, "rb") as f:
                f.seek(relayed.get(name, 0))
                chunk = f.read()
        except OSError:
            continue
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        relayed[name] = relayed.get(name, 0) + len(whole)
        for line in whole.decode(errors="replace").splitlines():
            if line.startswith(("epoch ", "warning: ", f"[{name}] ")):
                log(f"         {name:<14} {line.removeprefix(f'[{name}] ')}")


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
        "timings": {"started": datetime.fromtimestamp(t0, timezone.utc).isoformat(),
                    "finished": datetime.now(timezone.utc).isoformat(), "seconds": round(time.time() - t0, 2)},
    })
