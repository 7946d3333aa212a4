"""Every parameter of every step, in one place: name, type, default (the paper's), range and help.

MLflow does not validate int or float parameters, so the entry points parse and check them here
and stop with an error that names the parameter and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """A parameter that is not a number, is out of range or is not one of the choices."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def parse(self, raw: Any) -> Any:
        """Convert a command-line or MLproject string to the parameter's type and check its range."""
        if raw is None or (self.default is None and str(raw).strip() == ""):
            raise ParameterError(f"parameter {self.name} is required: {self.help}")
        if self.kind is str:
            value = str(raw)
        else:
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"parameter {self.name}={raw!r} is not a number; pass e.g. -P {self.name}={self.default}"
                ) from None
            if not math.isfinite(number):
                raise ParameterError(f"parameter {self.name}={raw!r} must be a finite number")
            if self.kind is int:
                if number != int(number):
                    raise ParameterError(f"parameter {self.name}={raw!r} must be a whole number")
                value = int(number)
            else:
                value = number
            if self.low is not None and value < self.low:
                raise ParameterError(f"parameter {self.name}={raw!r} is below its minimum {self.low:g}")
            if self.high is not None and value > self.high:
                raise ParameterError(f"parameter {self.name}={raw!r} is above its maximum {self.high:g}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {self.name}={raw!r} must be one of: {', '.join(self.choices)}")
        return value


def _int(name, default, help, low=0, high=None):
    return Param(name, int, default, help, low=low, high=high)


SEED = _int("seed", 0, "random seed; simulation k uses seed + k")
PATIENCE = _int("patience", 5, "early-stopping patience in epochs", low=1)
LBL_TRAI_SIZE = _int(
    "lbl_trai_size", 3000,
    "labelled training clips per simulation; twice as many are drawn, half kept for early stopping", low=1)

FEATURIZE = (
    Param("dataset", str, "synthetic",
          "'synthetic' (embedded eSpeak NG corpus), 'speech_commands_v0.01', 'speech_commands_v0.02' "
          "(downloaded once) or a directory in Speech Commands layout"),
    _int("unlabeled_set_size", 12000, "clips drawn from the unlabelled split (in neither list)", low=1),
    LBL_TRAI_SIZE,
    _int("lbl_test_size", 6000, "clips drawn from the testing list", low=1),
    _int("synthetic_clips_per_word", 100, "clips per word of the synthetic corpus", low=10, high=5000),
    SEED,
)

PRETRAIN_HYPERPARAMETERS = (
    _int("embedding_dim", 75, "size of the embedding", low=1),
    _int("ae_epochs", 500, "maximum auto-encoder epochs", low=1),
    PATIENCE,
    Param("optimizer", str, "Adamax", "Keras optimizer of the auto-encoder",
          choices=("Adamax", "Adam", "Nadam", "RMSprop", "SGD")),
    _int("batch_size", 32, "auto-encoder batch size", low=1),
    Param("position_loss_weight", float, 1.0,
          "weight of the position loss; 0 trains the plain auto-encoder (the ablation)", low=0.0),
)

EVALUATE_HYPERPARAMETERS = (
    _int("dnn_epochs", 500, "maximum epochs of the DNN on the embeddings", low=1),
    _int("cnn_epochs", 100, "maximum epochs of the MFCC-CNN benchmark", low=1),
)

FEATURIZE_RUN_ID = Param("featurize_run_id", str, None, "run id of a finished featurize run")
RESULTS_PATH = Param("results_path", str, "results", "folder where results.csv and the figures are written")

STEPS: dict[str, tuple[Param, ...]] = {
    "featurize": FEATURIZE,
    "pretrain": (FEATURIZE_RUN_ID, *PRETRAIN_HYPERPARAMETERS, SEED),
    "evaluate": (
        FEATURIZE_RUN_ID,
        Param("encoder_uri", str, "models:/spatial-ae-encoder@champion",
              "registered or logged encoder: models:/spatial-ae-encoder/3, models:/spatial-ae-encoder@champion, models:/m-..."),
        *EVALUATE_HYPERPARAMETERS, PATIENCE, LBL_TRAI_SIZE, SEED),
    "summarize": (
        Param("parent_run_id", str, None, "the main run whose simulations are summarised"),
        RESULTS_PATH),
    "main": (
        *FEATURIZE,
        *PRETRAIN_HYPERPARAMETERS,
        *EVALUATE_HYPERPARAMETERS,
        _int("num_simulations", 10, "repetitions, each a child run with its own seed", low=1),
        RESULTS_PATH),
}


def parse_step_params(step: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Parse and check the raw values of a step's parameters; missing ones take their defaults."""
    specs = {p.name: p for p in STEPS[step]}
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        raise ParameterError(f"unknown parameter(s) for {step}: {', '.join(unknown)}; known: {', '.join(specs)}")
    return {name: spec.parse(raw.get(name, spec.default)) for name, spec in specs.items()}


def mlproject_text() -> str:
    """The MLproject file, made from the parameters above (a test keeps the committed file equal to it)."""
    lines = ["name: spatial_ae", "", "python_env: python_env.yaml", "", "entry_points:"]
    for step, specs in STEPS.items():
        lines += [f"  {step}:", "    parameters:"]
        for spec in specs:
            kind = "string" if spec.kind is str else "float"
            default = "" if spec.default is None else f", default: \"{spec.default}\""
            lines.append(f"      {spec.name}: {{type: {kind}{default}}}")
        arguments = " ".join(f"--{spec.name} {{{spec.name}}}" for spec in specs)
        lines.append(f"    command: \"python entrypoints/{step}.py {arguments}\"")
    return "\n".join(lines) + "\n"
