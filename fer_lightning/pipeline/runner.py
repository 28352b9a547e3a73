"""Run a pipeline: stages in topological order, each skipped when nothing it depends on changed
(its key and manifest: ``cache.py``), independent ones side by side (in processes of their own:
``processes.py``). A re-run of an interrupted training stage resumes from its ``last.ckpt``.
"""

import fcntl
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml

import fer_lightning
from fer_lightning.artifacts import atomic_write_text, output_dir
from fer_lightning.errors import DISK_ERRNOS, UserError
from fer_lightning.pipeline.cache import (Fingerprints, check_done, code_version, input_refs, resume_key,
                                          stage_key, write_manifest)
from fer_lightning.pipeline.processes import (Running, StageContext, child_result, execute_in_process_or_child,
                                              interrupts_win_over_stage_failures, relay_progress, start_child,
                                              stop_children, torch_threads)
from fer_lightning.pipeline.spec import Pipeline, Stage, copied_stage, is_file_ref, map_refs


def _substitute(inputs, refs: dict):
    """The declared inputs structure with each reference replaced by its path."""
    return map_refs(inputs, lambda ref: str(refs[ref][0]))


def _input_loops(pipe: Pipeline, refs: dict) -> dict:
    """Path -> {dimension: value} of each input a foreach copy made (a report's ``spread_over``)."""
    ups = {r: pipe.stages[r.partition(".")[0]] for r in refs if not is_file_ref(r)}
    return {str(p): ups[r].loops for r, (p, _) in refs.items() if r in ups and ups[r].loop_values}


def _needs_own_process(stage: Stage) -> bool:
    """Lightning's DDP launcher re-executes ``sys.argv``; such a stage gets a process of its own."""
    t = stage.config.get("trainer") or {}
    strategy = str(t.get("strategy", ""))
    return "ddp" in strategy and "spawn" not in strategy and (
        t.get("num_nodes", 1) != 1 or t.get("devices") not in (None, 1, "1", "auto"))


@contextmanager
def _disk_errors_as_user_errors(stage: str):
    try:
        yield
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise UserError(f"stage '{stage}': cannot write {e.filename or 'an artifact'}: {e.strerror}; "
                            f"free space or fix permissions, then re-run (finished stages are kept)") from None
        raise


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
    # Several stages at once share the cores: OpenMP threads that spin while they wait for work (its
    # default) take them from the other stages' threads. Three JAFFE trainings of 2 threads each on
    # 2 cores ran an epoch in 5-11 s, and in 1 s with PASSIVE (README, Concurrent stages). A user's own
    # OMP_WAIT_POLICY is kept.
    passive = {"OMP_WAIT_POLICY": "PASSIVE"} if n > 1 and "OMP_WAIT_POLICY" not in os.environ else {}
    slots = [{**passive, **({"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} if len(ids) >= 2 else {})}
             for i in range(n)]
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
        fingerprints = Fingerprints(out_root / ".fingerprints.json", write=not dry_run)
        group = f"{pipe.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        version = code_version()
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
            covered = set()
            for name, stage in may_run.items():
                check = getattr(KINDS[stage.kind], "check", None)
                # foreach copies differ only in their values: a copy whose every value another copy
                # already had needs no check of its own (50 seed × fold copies: ~10 checks, not 50,
                # each ~0.5 s of parsing)
                values = {(copied_stage(name), k, repr(v)) for k, v in stage.loop_values.items()}
                if check and not (values and values <= covered):
                    covered |= values
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
                refs = input_refs(stage, out_root, fingerprints) if ready else None
                key = None if refs is None else stage_key(stage, refs, version, fingerprints)
                done, why = check_done(stage_dir, key) if key else (False, "inputs not finished")
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
                                group=group, key=key,
                                resume_key=resume_key(stage, refs, version, fingerprints),
                                input_loops=_input_loops(pipe, refs))

        def finish(ctx: StageContext, metrics: dict, t0: float):
            with _disk_errors_as_user_errors(ctx.name):
                write_manifest(ctx, pipe.stages[ctx.name], metrics, version, t0)
            log(f"         {ctx.name:<14} done in {time.time() - t0:.1f}s")

        def run_here(ctx: StageContext, n_threads):
            t0 = time.time()
            with _disk_errors_as_user_errors(ctx.name), torch_threads(n_threads):
                metrics = execute_in_process_or_child(ctx, _needs_own_process(pipe.stages[ctx.name]))
            finish(ctx, metrics, t0)

        with interrupts_win_over_stage_failures():
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
                running[name] = Running(start_child(ctx, env, log_file), slot, ctx, log_file, time.time())
            if progressed:
                continue
            if not running:
                break
            while True:
                relay_progress(running, relayed, log)
                if finished := [n for n, r in running.items() if r.proc.poll() is not None]:
                    break
                time.sleep(0.2)
            for name in finished:
                proc, slot, ctx, log_file, t0 = running.pop(name)
                free.append(slot)
                try:
                    finish(ctx, child_result(ctx, proc.returncode, log_file), t0)
                except UserError as e:
                    failed.append(e)
                    if running:
                        log(f"error: {e}; waiting for {', '.join(running)} to finish")
    except KeyboardInterrupt:
        stop_children(running)
        raise
    if failed:
        raise failed[0]


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
