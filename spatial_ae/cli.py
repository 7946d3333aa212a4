"""Command line of the steps: `python -m spatial_ae <step> --name value ...` (what MLproject runs) or
`python entrypoints/<step>.py --name value ...`."""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import sys

from .errors import UserError
from .parallel import configure_threads
from .params import STEPS, ParameterError, parse_step_params
from .tracking import check_tracking_server

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRAINING_STEPS = ("pretrain", "evaluate", "main", "kws", "sweep")

# step name -> "module:function"; each function takes the parsed parameters as keywords.
STEP_FUNCTIONS = {
    "featurize": "spatial_ae.featurize:featurize",
    "pretrain": "spatial_ae.pretrain:pretrain",
    "evaluate": "spatial_ae.evaluate:evaluate",
    "summarize": "spatial_ae.summarize:summarize",
    "main": "spatial_ae.workflow:main",
    "kws": "spatial_ae.kws:train_keyword_spotter",
    "predict": "spatial_ae.kws:predict_keywords",
    "sweep": "spatial_ae.sweep:sweep",
}


def user_errors() -> tuple[type[Exception], ...]:
    from .audio import AudioError
    from .download import DownloadError

    return (ParameterError, UserError, AudioError, DownloadError)


def step_function(step: str):
    module, function = STEP_FUNCTIONS[step].split(":")
    return getattr(importlib.import_module(module), function)


def enable_crash_reports() -> None:
    """faulthandler on the process's stderr: a crash in native code (TensorFlow) prints every thread's Python
    stack, not just "exit -11" (skipped where stderr is not a file descriptor)."""
    try:
        faulthandler.enable(sys.__stderr__)
    except (AttributeError, OSError, ValueError):
        pass


def main(step: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=step, description=f"Spatial AE: the {step} step")
    for spec in STEPS[step]:
        parser.add_argument(f"--{spec.name}", default=spec.default, help=f"{spec.help} (default: {spec.default})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    enable_crash_reports()
    try:
        params = parse_step_params(step, vars(args))
        check_tracking_server()  # before importing the step (TensorFlow): a down server is reported at once
        if step in TRAINING_STEPS:
            configure_threads(1)
        step_function(step)(**params)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interruption:  # SIGINT, or SIGTERM via tracking.Terminated
        print(f"interrupted ({str(interruption) or 'SIGINT'}): the open runs are marked KILLED, finished ones are "
              f"kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def main_with_step(argv: list[str]) -> int:
    """`python -m spatial_ae <step> --name value ...`: the step first, then its parameters."""
    if not argv or argv[0] not in STEPS:
        given = f"unknown step {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        print(f"error: {given}usage: python -m spatial_ae {{{','.join(STEPS)}}} [--name value ...]", file=sys.stderr)
        return 2
    return main(argv[0], argv[1:])
