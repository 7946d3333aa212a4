"""A step's process from start to end: logging and crash reports set up, Ctrl-C (SIGINT) and SIGTERM raised as
exceptions so that the step's runs close as KILLED, but never where the signal lands inside TensorFlow, Keras or
the SQL tracking store (an exception there can crash the process or leave an SQLite write open: docs/RELIABILITY.md).
There the signal is only recorded: a watcher thread has it raised in the main thread as soon as that thread has
left them, and `training.fit` stops at the next batch or epoch boundary (`received()`).
"""
from __future__ import annotations

import _thread
import contextlib
import ctypes
import faulthandler
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

from spatial_ae.errors import SimulationsFailed, UserError
from spatial_ae.names import NOTE_TAG, PROCESS_TAG, SIMULATION_TAG

log = logging.getLogger(__name__)

UNINTERRUPTIBLE = ("tensorflow", "keras", "sqlalchemy")  # modules an exception must not cut through
WATCH_SECONDS = 0.02


class Terminated(KeyboardInterrupt):
    """SIGTERM (or a signal whose first exception was swallowed), turned into an exception so that open runs are
    closed as killed."""


_received: list[int] = []  # SIGINT / SIGTERM received during the current step, newest last
_lock = threading.RLock()
_state = {"deferred": False, "redelivering": False}  # recorded but not raised yet; watcher's call in flight


@contextlib.contextmanager
def raised_as_exceptions() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM `Terminated` in the main thread (elsewhere
    nothing changes); afterwards the previous handlers are back and nothing is pending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _forget(starting=True)
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        _forget()  # this step's signals are handled: none may stop later work in this process
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def received() -> int | None:
    """The newest signal received in this step, raised or not (TensorFlow, or an import lock's callback, may have
    swallowed its exception), or None."""
    return _received[-1] if _received else None


def stop_if_interrupted() -> None:
    """Raise now if a signal came during this step: long loops call this so that they stop at once, not at the
    step's end, even where the signal's exception was swallowed or is still waiting to be raised."""
    with _lock:
        if not _received:
            return
        _state["deferred"] = False
    raise _exception()


def _exception() -> KeyboardInterrupt:
    signum = _received[-1]
    return (KeyboardInterrupt if signum == signal.SIGINT else Terminated)(f"received signal {signum}")


def _forget(*, starting: bool = False) -> None:
    with _lock:
        _received.clear()
        _state["deferred"] = False
        if starting:  # a watcher's call left over from an earlier step is long handled
            _state["redelivering"] = False


def _on_signal(signum, frame):
    """Handler of SIGINT and SIGTERM, also called by the watcher (`_state["redelivering"]`)."""
    with _lock:
        redelivered, _state["redelivering"] = _state["redelivering"], False
        if redelivered and not _state["deferred"]:
            return  # raised meanwhile by stop_if_interrupted
        if not redelivered:
            _received.append(signum)
        if _inside_uninterruptible(frame):
            if not _state["deferred"]:
                _state["deferred"] = True
                threading.Thread(target=_raise_when_interruptible, name="spatial-ae-interruption",
                                 daemon=True).start()
            return
        _state["deferred"] = False
    raise _exception()


def _raise_when_interruptible() -> None:
    """Watcher thread: calls the handler in the main thread once that thread is outside UNINTERRUPTIBLE."""
    main = threading.main_thread()
    while main.is_alive():
        time.sleep(WATCH_SECONDS)
        with _lock:
            if not _state["deferred"]:
                return
            if not _state["redelivering"] and not _inside_uninterruptible(sys._current_frames().get(main.ident)):
                _state["redelivering"] = True
                _thread.interrupt_main(_received[-1])


def _inside_uninterruptible(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(UNINTERRUPTIBLE):
            return True
        frame = frame.f_back
    return False


# Process set-up: logging and crash reports, the same in a step and in its worker processes
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVEL_VARIABLE = "SPATIAL_AE_LOG_LEVEL"  # DEBUG shows every training epoch; default INFO
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def enable_crash_reports() -> None:
    """faulthandler on the process's stderr: a crash in native code (TensorFlow) prints every thread's Python
    stack, not just "exit -11" (skipped where stderr is not a file descriptor)."""
    try:
        faulthandler.enable(sys.__stderr__)
    except (AttributeError, OSError, ValueError):
        pass


def log_level() -> int:
    """The level of Spatial AE's own log lines, from SPATIAL_AE_LOG_LEVEL (default INFO)."""
    name = os.environ.get(LOG_LEVEL_VARIABLE, "").strip().upper() or "INFO"
    if name not in LOG_LEVELS:
        raise UserError(f"{LOG_LEVEL_VARIABLE}={os.environ[LOG_LEVEL_VARIABLE]!r} is not a log level; set it to one "
                        f"of {', '.join(LOG_LEVELS)} or unset it")
    return getattr(logging, name)


def quiet_third_party() -> None:
    """Before TensorFlow or MLflow work starts (here, and inherited by worker processes): no TensorFlow C++ INFO
    lines (the CPU-feature banner) and no MLflow progress bar per artifact download; each is set only where the
    user has not set it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _not_retracing(record: logging.LogRecord) -> bool:
    """False for TensorFlow's "triggered tf.function retracing" warnings (each new model traces anew: expected)."""
    return "tf.function retracing" not in record.getMessage()


def configure_logging(level: int, log_format: str = LOG_FORMAT) -> None:
    """Log lines to stderr: Spatial AE's at `level`, other libraries' from INFO; warnings that tell the user
    nothing they can act on (TensorFlow's retracing, MLflow's doubt about a dataset's source) are dropped."""
    logging.basicConfig(level=logging.INFO, format=log_format)
    logging.getLogger("spatial_ae").setLevel(level)
    tensorflow = logging.getLogger("tensorflow")
    if _not_retracing not in tensorflow.filters:
        tensorflow.addFilter(_not_retracing)
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways",
                            category=UserWarning)


# The step's process and its workers: none outlives the process that started it

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


_WATCHED: set[int] = set()  # parents this process already watches


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGTERM this process when its parent (by default the multiprocessing parent) dies, so that a worker whose
    `main` was SIGKILLed closes its run KILLED and exits instead of taking the queued simulations as an orphan.

    Linux: the kernel sends the signal (prctl PR_SET_PDEATHSIG); elsewhere, and as a backstop, a daemon thread
    polls the parent pid. A parent that died before this ran is caught by the pid check right after."""
    if parent_pid is None:
        parent = multiprocessing.parent_process()
        parent_pid = parent.pid if parent is not None else os.getppid()
    if parent_pid in _WATCHED:  # a reused worker (a Spark executor's Python) set up again for its next task
        return
    _WATCHED.add(parent_pid)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            log.debug("prctl unavailable: parent watched by polling only")
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="spatial-ae-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Send SIGTERM to this process once its parent is no longer `parent_pid` (reparented: the parent died)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    log.warning("parent process %d ended: stopping", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


LAUNCHER_WATCH_VARIABLE = "SPATIAL_AE_DIE_WITH_PARENT"  # 1: always, 0: never; unset: under `mlflow run` only
SHELLS = ("sh", "bash", "dash", "zsh")


def die_with_launcher() -> None:
    """Stop this step (SIGTERM: its runs end KILLED) when the process that launched it dies.

    Under `mlflow run` the step is a child of the `mlflow run` CLI (through `bash -c`, which execs a single command),
    and that CLI cancels its entry point only on Ctrl-C; SIGTERM (or SIGKILL) ends the CLI at once and would leave
    the step training, reparented. So, when launched by `mlflow run` (MLFLOW_RUN_ID set), or with
    SPATIAL_AE_DIE_WITH_PARENT=1, the parent is watched (prctl PR_SET_PDEATHSIG on Linux, and polling), and so is
    the grandparent when the parent is a shell that did not exec (an activation command,
    `... && python -m spatial_ae`). Not otherwise: a step started with `nohup ... &` must outlive its shell.
    SPATIAL_AE_DIE_WITH_PARENT=0 turns the watch off."""
    setting = os.environ.get(LAUNCHER_WATCH_VARIABLE, "").strip()
    if setting == "0" or (setting != "1" and not os.environ.get("MLFLOW_RUN_ID")):
        return
    parent = os.getppid()
    if parent == 1:  # the launcher is already gone (or this was started by init): nothing to watch
        return
    die_with_parent(parent)
    stat = _proc_stat(parent)
    if stat and stat[0] in SHELLS and stat[1] > 1:
        threading.Thread(target=_watch_grandparent, args=(parent, stat[1]), name="spatial-ae-launcher-watch",
                         daemon=True).start()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(command name, parent pid) of process `pid` from /proc, or None (no /proc, or the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:].rsplit(")", 1)
    return name, int(rest.split()[1])


def _watch_grandparent(shell: int, launcher: int) -> None:
    """SIGTERM this process once the shell between it and its launcher is orphaned (the launcher died)."""
    while (_proc_stat(shell) or ("", launcher))[1] == launcher:
        time.sleep(PARENT_POLL_SECONDS)
    logging.getLogger(__name__).warning("launcher process %d ended: stopping", launcher)
    os.kill(os.getpid(), signal.SIGTERM)


# Runs their process could not close

def close_running_children(parent_run_id: str, status: str, simulation: int | None = None, note: str | None = None,
                           left_by: str = "a worker process that stopped") -> None:
    """Mark the child runs of `parent_run_id` still RUNNING (their process died) as `status`: all of them, or those
    of one `simulation` index; `note` becomes their description."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    only = "" if simulation is None else f" and tags.`{SIMULATION_TAG}` = '{simulation}'"
    for run in client.search_runs([parent.info.experiment_id], max_results=10000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                                f"and attributes.status = 'RUNNING'{only}"):
        log.warning("run %s (%s) was left running by %s: marked %s", run.info.run_id, run.info.run_name, left_by,
                    status)
        if note:
            client.set_tag(run.info.run_id, NOTE_TAG, note)
        client.set_terminated(run.info.run_id, status)


def this_process() -> str:
    """host:pid:start time of this process (the value of PROCESS_TAG)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def close_runs_of_ended_processes(experiment_id: str) -> None:
    """Mark FAILED the RUNNING runs of `experiment_id` whose process, on this machine, has ended without closing
    them (a crash in native code, SIGKILL, the out-of-memory killer). Runs of other machines are left alone."""
    if _start_time(os.getpid()) is None:  # no /proc: a live process cannot be told from an ended one
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    host = socket.gethostname()
    for run in client.search_runs([experiment_id], max_results=10000,
                                  filter_string=f"attributes.status = 'RUNNING' and tags.`{PROCESS_TAG}` LIKE '{host}:%'"):
        _, pid, started = run.data.tags[PROCESS_TAG].rsplit(":", 2)
        if _start_time(int(pid)) != started:  # gone, or the pid now belongs to another process
            log.warning("run %s (%s) was left RUNNING by process %s, which ended without closing it (a crash or "
                        "SIGKILL): marked FAILED", run.info.run_id, run.info.run_name, pid)
            client.set_tag(run.info.run_id, NOTE_TAG,
                           f"Marked FAILED: process {pid} on {host} ended without closing this run (a crash or SIGKILL).")
            client.set_terminated(run.info.run_id, "FAILED")


def _start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in parentheses may hold spaces


# The guard every step runs in


def run_guarded(work: Callable[[], None], user_errors: tuple[type[Exception], ...]) -> int:
    """Run a step's `work` in a process set up for it (crash reports, no outliving its launcher, logging) and
    return its exit status: 0 done; 2 an error the user can fix (one line, no traceback); 1 some simulations
    failed (each logged, the rest kept); 130 interrupted (the open runs are KILLED, finished ones kept)."""
    enable_crash_reports()
    die_with_launcher()  # under `mlflow run`: no step may outlive a killed `mlflow run`
    quiet_third_party()
    try:
        configure_logging(log_level())
        work()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SimulationsFailed as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:  # SIGINT, or SIGTERM as Terminated
        print(f"interrupted ({str(interruption) or 'SIGINT'}): the open runs are marked KILLED, finished ones are "
              f"kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0
