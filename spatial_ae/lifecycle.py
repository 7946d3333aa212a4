"""A step's process from start to end: logging and crash reports set up, Ctrl-C (SIGINT) and SIGTERM raised as
exceptions so that the step's runs close as KILLED, but never where the signal lands inside TensorFlow, Keras or
the SQL tracking store (an exception there can crash the process or leave an SQLite write open: docs/RELIABILITY.md).
There the signal is only recorded: a watcher thread has it raised in the main thread as soon as that thread has
left them, and `training.fit` stops at the next batch or epoch boundary (`received()`).
"""
from __future__ import annotations

import _thread
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import warnings
from typing import Iterator

from spatial_ae.errors import UserError

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
