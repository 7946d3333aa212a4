"""Ctrl-C (SIGINT) and SIGTERM during a step: raised as exceptions so that the step's run is closed as KILLED,
but never where the signal lands inside TensorFlow, Keras or the SQL tracking store.

An exception raised in the middle of those libraries crashed the process (SIGSEGV in TensorFlow, once on CI) or
left an SQLite write transaction open, so that closing the runs failed with "database is locked" (2 interruptions
in 30 here). There the signal is only recorded: a watcher thread has it raised in the main thread as soon as that
thread has left them, and `training.fit` stops at the next batch or epoch boundary (`received()`).
"""
from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from typing import Iterator

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
