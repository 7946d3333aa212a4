"""Command line of the steps: `python -m spatial_ae <step> --name value ...` (what MLproject runs) or
`python entrypoints/<step>.py --name value ...`."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from spatial_ae.errors import SimulationsFailed, UserError
from spatial_ae.lifecycle import configure_logging, enable_crash_reports, log_level, quiet_third_party
from spatial_ae.runs.parallel import PARENT_POLL_SECONDS, configure_threads, die_with_parent
from spatial_ae.params import STEPS, ParameterError, parse_run_settings, parse_step_params, step_arguments
from spatial_ae.mlflow_io.tracking import check_tracking_server

TRAINING_STEPS = ("pretrain", "evaluate", "main", "kws", "sweep")

# step name -> "module:function"; each function takes its `params.step_arguments` as keywords.
STEP_FUNCTIONS = {
    "featurize": "spatial_ae.steps.featurize:featurize",
    "pretrain": "spatial_ae.steps.pretrain:pretrain",
    "evaluate": "spatial_ae.steps.evaluate:evaluate",
    "summarize": "spatial_ae.steps.summarize:summarize",
    "main": "spatial_ae.runs.workflow:main",
    "kws": "spatial_ae.steps.kws:train_keyword_spotter",
    "predict": "spatial_ae.steps.kws:predict_keywords",
    "sweep": "spatial_ae.runs.sweep:sweep",
    "embed": "spatial_ae.steps.embed:embed",
}


def user_errors() -> tuple[type[Exception], ...]:
    from spatial_ae.data.audio import AudioError
    from spatial_ae.data.download import DownloadError

    return (ParameterError, UserError, AudioError, DownloadError)


def step_function(step: str):
    module, function = STEP_FUNCTIONS[step].split(":")
    return getattr(importlib.import_module(module), function)


LAUNCHER_WATCH_VARIABLE = "SPATIAL_AE_DIE_WITH_PARENT"  # 1: always, 0: never; unset: under `mlflow run` only
SHELLS = ("sh", "bash", "dash", "zsh")


def die_with_launcher() -> None:
    """Stop this step (SIGTERM: its runs end KILLED) when the process that launched it dies.

    Under `mlflow run` the step is a child of the `mlflow run` CLI (through `bash -c`, which execs a single command),
    and that CLI cancels its entry point only on Ctrl-C (KeyboardInterrupt in mlflow.projects.run ->
    LocalSubmittedRun.cancel); SIGTERM (or SIGKILL) ends the CLI at once and left the step training, reparented,
    for minutes. So, when launched by `mlflow run` (MLFLOW_RUN_ID set), or with SPATIAL_AE_DIE_WITH_PARENT=1, the
    parent is watched (prctl PR_SET_PDEATHSIG on Linux, and polling), and so is the grandparent when the parent is
    a shell that did not exec (an activation command, `... && python -m spatial_ae`). Not otherwise: a step
    started with `nohup ... &` must outlive its shell. SPATIAL_AE_DIE_WITH_PARENT=0 turns the watch off."""
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


def apply_run_settings(settings: dict, dataset: str | None) -> str | None:
    """TensorBoard logging on (inherited by worker processes through the environment), and the experiment the
    runs go to, for the steps that have these settings; returns that experiment's id (None: not chosen here)."""
    if settings.get("tensorboard"):
        if importlib.util.find_spec("tensorboard") is None:
            raise UserError("tensorboard=true needs the tensorboard package. Fix: pip install 'spatial_ae[tensorboard]' "
                            "(or pip install tensorboard), or leave tensorboard false")
        from spatial_ae.method.training import TENSORBOARD_VARIABLE

        os.environ[TENSORBOARD_VARIABLE] = "1"
    if "experiment_name" not in settings:
        return None
    from spatial_ae.mlflow_io.experiment import use_experiment

    return use_experiment(settings["experiment_name"], dataset)


def main(step: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=step, description=f"Spatial AE: the {step} step")
    for spec in STEPS[step]:
        parser.add_argument(f"--{spec.name}", default=spec.default, help=f"{spec.help} (default: {spec.default})")
    args = parser.parse_args(argv)
    enable_crash_reports()
    die_with_launcher()  # under `mlflow run`: no step may outlive a killed `mlflow run`
    quiet_third_party()
    try:
        configure_logging(log_level())
        params = parse_step_params(step, vars(args))
        settings = parse_run_settings(step, vars(args))
        check_tracking_server()  # before importing the step (TensorFlow): a down server is reported at once
        experiment_id = apply_run_settings(settings, params.get("dataset"))
        arguments = step_arguments(step, params)  # a spark_master's cluster is checked here, before any work
        if step in TRAINING_STEPS:
            configure_threads(1)
        step_function(step)(**arguments)
        if experiment_id is not None:
            from spatial_ae.mlflow_io.experiment import where_to_look

            logging.getLogger(__name__).info("%s", where_to_look(experiment_id))
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SimulationsFailed as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # the runs are FAILED, the rest kept
        return 1
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
