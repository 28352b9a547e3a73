"""Running a stage: in this process, or in a process of its own (stages side by side, multi-process
DDP), and stopping those processes when the run is interrupted (Ctrl-C, SIGTERM).
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from fer_lightning.artifacts import atomic_write_json
from fer_lightning.errors import UserError


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
    resume_key: str = ""    # what a training's last.ckpt must match (the key without trainer.max_time)
    input_loops: dict = field(default_factory=dict)  # path of an input made by a foreach copy -> its
                                                     # {dimension: value}, e.g. {"seed": 3, "fold": 7}

    def output(self, name: str) -> Path:
        from stages import KINDS

        return self.out_dir / KINDS[self.kind].OUTPUTS[name]


def execute(ctx: StageContext) -> dict:
    """Run one stage in this process; returns its summary metrics."""
    from stages import KINDS

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return KINDS[ctx.kind].run(ctx) or {}
    except FloatingPointError as e:  # NaN/inf loss: a user-fixable failure, reported in one line
        raise UserError(f"stage '{ctx.name}' stopped: {e}") from None


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


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # what interrupts a run (interrupts_win_over_stage_failures)


def _die_with_parent():  # Linux: a stage process must not outlive a runner killed with SIGKILL
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by start_child around the fork
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_child(ctx: StageContext, env: dict | None = None, log_file: Path | None = None):
    """Start ``fer-lightning _stage job.json`` for ``ctx``; returns the Popen."""
    job = ctx.out_dir / "job.json"
    d = asdict(ctx)
    d["out_dir"] = str(ctx.out_dir)
    atomic_write_json(job, d)
    job.with_suffix(".result.json").unlink(missing_ok=True)
    out = open(log_file, "w") if log_file else None
    linux = sys.platform.startswith("linux")
    # Ctrl-C or SIGTERM during the fork would raise KeyboardInterrupt inside the fork's handlers,
    # which Python only prints: held back until the child exists, it interrupts the runner as anywhere else.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if linux else None
    try:
        return subprocess.Popen([sys.executable, "-m", "fer_lightning", "_stage", str(job)],
                                env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                preexec_fn=_die_with_parent if linux else None)
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if out:
            out.close()


def child_result(ctx: StageContext, rc: int, log_file: Path | None = None) -> dict:
    result = ctx.out_dir / "job.result.json"
    if rc != 0 or not result.is_file():
        where = "see its output above"
        if log_file:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            where = f"last line: {tail[0].strip()!r}; full log: {log_file}"
        raise UserError(f"stage '{ctx.name}' failed in its own process (exit code {rc}); {where}")
    return json.loads(result.read_text())


def execute_in_process_or_child(ctx: StageContext, own_process: bool) -> dict:
    if not own_process:
        return execute(ctx)
    return child_result(ctx, start_child(ctx).wait())


@contextmanager
def torch_threads(n: int | None):
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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (``kill``, a scheduler's stop, ``timeout``) ended the run."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interrupts_win_over_stage_failures():
    """Ctrl-C reaches the stage processes too, which then fail, and a training in this process
    turns it into ``sys.exit(1)`` (Lightning's graceful shutdown): a run the user interrupted ends
    as :class:`Interrupted`, not as a stage failure. SIGTERM is taken the same way (Python would
    otherwise end this process at once, without a word).

    Each signal is taken only where nobody else has claimed it: SIGINT when Python's default
    handler has it (a run started with ``nohup`` or ``&`` from a script ignores Ctrl-C, and keeps
    ignoring it), SIGTERM when nothing handles it (so a program embedding the runner keeps its own)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    ours = [s for s, default in defaults.items() if signal.getsignal(s) is default]
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    for s in ours:
        signal.signal(s, on_signal)
    try:
        yield
    except (UserError, SystemExit, KeyboardInterrupt):
        if interrupted:
            raise Interrupted(interrupted[0]) from None
        raise
    finally:
        for s in ours:
            signal.signal(s, defaults[s])


class Running(NamedTuple):
    """A stage running in a process of its own (the runner keeps ``{stage name: Running}``)."""
    proc: subprocess.Popen
    slot: int               # which of the runner's concurrent slots it holds
    ctx: StageContext
    log_file: Path
    started: float          # time.time() at its start


def stop_children(running: dict, grace: float = 15.0):
    """The run was interrupted: ask the stage processes still running to stop (SIGTERM; a training
    ends at its next batch, Lightning's graceful shutdown) and give them ``grace`` seconds, rather
    than leave them to the SIGKILL they get when this process exits."""
    procs = [r.proc for r in running.values() if r.proc.poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass


def relay_progress(running: dict, relayed: dict, log):
    """Echo the progress lines (``epoch 3/40: ...``, ClassifierModule._say_progress), warnings and
    resumes (``[cnn1] resuming from ...``) that stages in their own processes wrote to their logs
    since the last look, under the stage's name."""
    for name, r in running.items():
        try:
            with open(r.log_file, "rb") as f:
                f.seek(relayed.get(name, 0))
                chunk = f.read()
        except OSError:
            continue
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        relayed[name] = relayed.get(name, 0) + len(whole)
        for line in whole.decode(errors="replace").splitlines():
            if line.startswith(("epoch ", "warning: ", f"[{name}] ")):
                log(f"         {name:<14} {line.removeprefix(f'[{name}] ')}")
