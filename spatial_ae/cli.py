"""Command line of the steps: `python entrypoints/<step>.py --name value ...` (what MLproject runs) or
`python -m spatial_ae <step> --name value ...`."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from spatial_ae.errors import UserError
from spatial_ae.names import TENSORBOARD_VARIABLE
from spatial_ae.lifecycle import run_guarded
from spatial_ae.runs.parallel import configure_threads
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


def apply_run_settings(settings: dict, dataset: str | None) -> str | None:
    """TensorBoard logging on (inherited by worker processes through the environment), and the experiment the
    runs go to, for the steps that have these settings; returns that experiment's id (None: not chosen here)."""
    if settings.get("tensorboard"):
        if importlib.util.find_spec("tensorboard") is None:
            raise UserError("tensorboard=true needs the tensorboard package. Fix: pip install 'spatial_ae[tensorboard]' "
                            "(or pip install tensorboard), or leave tensorboard false")
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
    return run_guarded(lambda: _run(step, vars(args)), user_errors())


def _run(step: str, raw: dict) -> None:
    params = parse_step_params(step, raw)
    settings = parse_run_settings(step, raw)
    check_tracking_server()  # before importing the step (TensorFlow): a down server is reported at once
    experiment_id = apply_run_settings(settings, params.get("dataset"))
    arguments = step_arguments(step, params)  # a spark_master's cluster is checked here, before any work
    if step in TRAINING_STEPS:
        configure_threads(1)
    step_function(step)(**arguments)
    if experiment_id is not None:
        from spatial_ae.mlflow_io.experiment import where_to_look

        logging.getLogger(__name__).info("%s", where_to_look(experiment_id))


def main_with_step(argv: list[str]) -> int:
    """`python -m spatial_ae <step> --name value ...`: the step first, then its parameters."""
    if not argv or argv[0] not in STEPS:
        given = f"unknown step {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        print(f"error: {given}usage: python -m spatial_ae {{{','.join(STEPS)}}} [--name value ...]", file=sys.stderr)
        return 2
    return main(argv[0], argv[1:])
