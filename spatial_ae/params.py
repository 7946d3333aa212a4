"""Every parameter of every step, in one place: name, type, default (the paper's), range and help.

MLflow does not validate int or float parameters, so the entry points parse and check them here
and stop with an error that names the parameter and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from spatial_ae.method.recipes import RECIPES, resolve_recipe
from spatial_ae.settings import (RECIPE_OPTIONS, EvaluateSettings, FeaturizeSettings, MainSettings,
                                 PretrainSettings, Recipe, SweepSettings)



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
    optional: bool = False  # empty or missing means None: "not given", filled later (e.g. from the recipe)
    list_of: type | None = None  # a comma-separated list of this kind; low, high and choices apply to each item

    def parse(self, raw: Any) -> Any:
        """Convert a command-line or MLproject string to the parameter's type and check its range."""
        if self.list_of is not None:
            return self._parse_list(raw)
        if self.optional and (raw is None or str(raw).strip() == ""):
            return None
        if self.kind is bool:
            return _parse_bool(self.name, raw)
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
                raise ParameterError(f"parameter {self.name}={raw!r} is below its minimum {self.low:.10g}")
            if self.high is not None and value > self.high:
                raise ParameterError(f"parameter {self.name}={raw!r} is above its maximum {self.high:.10g}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {self.name}={raw!r} must be one of: {', '.join(self.choices)}")
        return value

    def _parse_list(self, raw: Any) -> list:
        """`a,b,c` (or an already parsed list) as a list of `list_of`, each item checked as a parameter of its own."""
        items = list(raw) if isinstance(raw, (list, tuple)) else [] if raw is None else str(raw).split(",")
        items = [item.strip() if isinstance(item, str) else item for item in items]
        fix = f"pass a comma-separated list, e.g. -P {self.name}={self.default}"
        if not items or any(item == "" for item in items):
            raise ParameterError(f"parameter {self.name}={raw!r} has an empty item or is empty; {fix}")
        item_spec = Param(self.name, self.list_of, self.default, self.help, low=self.low, high=self.high,
                          choices=self.choices)
        values = []
        for item in items:
            try:
                values.append(item_spec.parse(item))
            except ParameterError as error:
                raise ParameterError(f"{error} (item of {self.name}={raw!r}; {fix})") from None
        return values

    def text(self, value: Any) -> str:
        """The value as given on the command line (lists comma-separated)."""
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value) \
            if self.list_of is not None and isinstance(value, (list, tuple)) else str(value)


def _parse_bool(name: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ParameterError(f"parameter {name}={raw!r} must be true or false")


def _int(name, default, help, low=0, high=None):
    return Param(name, int, default, help, low=low, high=high)


SEED = _int("seed", 0, "random seed; simulation k uses seed + k - 1", high=2**32 - 1)
PATIENCE = _int("patience", 5, "early-stopping patience in epochs", low=1)
LBL_TRAI_SIZE = _int(
    "lbl_trai_size", 3000,
    "labelled training clips per simulation; twice as many are drawn, half kept for early stopping", low=1)

FEATURIZE = (
    Param("dataset", str, "synthetic",
          "'synthetic' (embedded eSpeak NG corpus), 'speech_commands_v0.01', 'speech_commands_v0.02' "
          "(downloaded once), a directory in Speech Commands layout, or 'fsdd:/path/to/fsdd' (Free Spoken Digit "
          "Dataset, speakers held out; ':labelled=<speaker>,test=<speaker>' appended picks them)"),
    _int("unlabeled_set_size", 12000, "clips drawn from the unlabelled split (in neither list)", low=1),
    LBL_TRAI_SIZE,
    _int("lbl_test_size", 6000, "clips drawn from the testing list", low=1),
    _int("synthetic_clips_per_word", 100, "clips per word of the synthetic corpus", low=10, high=5000),
    SEED,
    Param("include_unknown_silence", bool, False, "keep the _unknown_ and _silence_ folders as classes (the "
          "12-class Speech Commands protocol of most KWS papers); false drops every folder starting with _"),
)
SPARK_MASTER = Param("spark_master", str, "", "Spark master URL (local[2], local-cluster[2,1,1024], "
                     "spark://host:7077, yarn, k8s://https://host:443, or active: the session spark-submit or "
                     "Databricks provides) that runs the step's parallel work; empty = this machine (worker "
                     "processes); needs pip install -e '.[spark]' and Java 17+ (docs/SCALE.md)")
FEATURIZE = (*FEATURIZE, SPARK_MASTER)

RECIPE_OPTION_PARAMS = tuple(
    Param(spec.name, get_type_hints(Recipe)[spec.name], None, f"{spec.metadata['help']}; empty = from the recipe",
          optional=True,
          **{key: value for key, value in spec.metadata.items() if key not in ("help", "position")})
    for spec in fields(Recipe) if spec.name != "name")

PRETRAIN_HYPERPARAMETERS = (
    _int("ae_epochs", 500, "maximum auto-encoder epochs", low=1),
    _int("ae_min_epochs", 50, "auto-encoder epochs before early stopping may stop it; 0 = the paper's early "
         "stopping (from the first epoch), where the raw-MFCC auto-encoder's validation loss stalls early and "
         "stops it before it has learnt the words (docs/RESULTS.md)"),
    PATIENCE,
    Param("optimizer", str, "Adamax", "Keras optimizer of the auto-encoder",
          choices=("Adamax", "Adam", "Nadam", "RMSprop", "SGD")),
    _int("batch_size", 32, "auto-encoder batch size", low=1),
    Param("recipe", str, "paper",
          "preset of the options below: 'paper' (the published method), 'balanced' (standardised inputs and "
          "positions, log-mel k-means anchors, balanced losses), 'dtw' (as balanced, with DTW distances of the "
          "MFCC to 32 exemplar clips as positions), 'raw_dtw' (dtw's positions, the paper's raw MFCC), or a "
          "candidate on top of paper: 'anchors' (log-mel positions to 8 k-means anchors), 'wide' (200-d code), "
          "'shifted' (time-shifted copies), 'voices' (synthetic voices as extra unlabelled clips); options given "
          "explicitly override it",
          choices=tuple(RECIPES)),
    *RECIPE_OPTION_PARAMS,
)

EVALUATE_HYPERPARAMETERS = (
    _int("dnn_epochs", 500, "maximum epochs of the DNN on the embeddings", low=1),
    _int("cnn_epochs", 100, "maximum epochs of the MFCC-CNN benchmark", low=1),
    _int("labelled_per_word", 0, "labelled training clips per word and simulation (as many again for early "
         "stopping), drawn word by word; 0 = draw lbl_trai_size clips regardless of word"),
)

FEATURIZE_RUN_ID = Param("featurize_run_id", str, None, "run id of a finished featurize run")
RESULTS_PATH = Param("results_path", str, "results", "folder under which each run writes results.csv and the figures, in <run name>-<run id>/ (latest: the newest)")
# run settings: where the runs go and what else they log; cli.py applies them, the steps never see them
EXPERIMENT_NAME = Param("experiment_name", str, None, "MLflow experiment of the runs; empty = spatial-ae-<dataset> "
                        "(or the experiment given to MLflow: mlflow run --experiment-name, MLFLOW_EXPERIMENT_NAME)",
                        optional=True)
TENSORBOARD = Param("tensorboard", bool, False, "also log TensorBoard logs of every training, as artifacts "
                    "tensorboard/<model>/ (needs the tensorboard package: pip install spatial_ae[tensorboard])")
RUN_SETTINGS = ("experiment_name", "tensorboard")

STEPS: dict[str, tuple[Param, ...]] = {
    "featurize": (*FEATURIZE, EXPERIMENT_NAME),
    "pretrain": (FEATURIZE_RUN_ID, *PRETRAIN_HYPERPARAMETERS, SEED, TENSORBOARD),
    "evaluate": (
        FEATURIZE_RUN_ID,
        Param("encoder_uri", str, "models:/spatial-ae-encoder@champion",
              "registered or logged encoder: models:/spatial-ae-encoder/3, models:/spatial-ae-encoder@champion, models:/m-..."),
        *EVALUATE_HYPERPARAMETERS, PATIENCE, LBL_TRAI_SIZE, SEED, TENSORBOARD),
    "summarize": (
        Param("parent_run_id", str, None, "the main run whose simulations are summarised"),
        RESULTS_PATH),
    "main": (
        *FEATURIZE,
        *PRETRAIN_HYPERPARAMETERS,
        *EVALUATE_HYPERPARAMETERS,
        _int("num_simulations", 10, "repetitions, each a child run with its own seed", low=1),
        _int("parallel_simulations", 0, "simulations run at once, each in a worker process; 0 = one per CPU "
             "core, 1 = one after the other in the main process"),
        RESULTS_PATH, EXPERIMENT_NAME, TENSORBOARD),
    "sweep": (
        *FEATURIZE,
        *(p for p in PRETRAIN_HYPERPARAMETERS if p.name not in ("recipe", "position_loss_weight")),
        *(p for p in EVALUATE_HYPERPARAMETERS if p.name != "labelled_per_word"),
        Param("recipes", str, "paper,balanced,dtw", "comma-separated recipes of the grid", choices=tuple(RECIPES),
              list_of=str),
        Param("position_loss_weights", str, "0,1", "comma-separated position loss weights of the grid", low=0.0,
              list_of=float),
        Param("labelled_per_word", str, "5,10,20", "comma-separated labelled clips per word of the grid; 0 = draw "
              "lbl_trai_size clips regardless of word", low=0, list_of=int),
        _int("num_simulations", 3, "simulations per cell of the grid", low=1),
        _int("parallel_simulations", 0, "simulations run at once, each in a worker process that runs that "
             "simulation of every cell; 0 = one per CPU core, 1 = one after the other in the main process"),
        Param("results_path", str, "results/sweep", "folder under which each sweep writes sweep.csv and the figure, in sweep-<run id>/ (latest: the newest)"),
        EXPERIMENT_NAME, TENSORBOARD),
    "kws": (
        Param("encoder_uri", str, "models:/spatial-ae-encoder@champion", "registered encoder that embeds the clips"),
        Param("data_dir", str, None, "labelled folder <word>/<clip>.wav; with validation_list.txt and "
              "testing_list.txt they give the early-stopping and test clips, else each word is split 70/15/15"),
        _int("dnn_epochs", 500, "maximum epochs of the keyword classifier (the DNN probe)", low=1),
        PATIENCE, SEED, TENSORBOARD),
    "predict": (
        Param("kws_uri", str, "models:/spatial-ae-kws@champion", "registered keyword spotter"),
        Param("inputs", str, None, "a WAV file or a folder of them (searched recursively)"),
        Param("output_csv", str, "results/predictions.csv", "CSV written with columns file, word, confidence")),
    "embed": (
        Param("encoder_uri", str, "models:/spatial-ae-encoder@champion", "registered encoder that embeds the clips"),
        Param("corpus", str, None, "a folder of WAV files (searched recursively; <word>/<clip>.wav gives the word) "
              "or a text file of WAV paths, one per line (relative ones from the file's folder)"),
        Param("output_path", str, None, "Parquet folder written with columns path, embedding (float array) and "
              "word where the folder says; a new path (or an s3a://, hdfs://... URI with spark_master)"),
        SPARK_MASTER),
}


def parse_step_params(step: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Parse and check the raw values of a step's parameters; missing ones take their defaults.
    The run settings (RUN_SETTINGS) are checked too but left out: `parse_run_settings` returns them."""
    specs = {p.name: p for p in STEPS[step]}
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        raise ParameterError(f"unknown parameter(s) for {step}: {', '.join(unknown)}; known: {', '.join(specs)}")
    params = {name: spec.parse(raw.get(name, spec.default)) for name, spec in specs.items()}
    check_step_params(step, params)
    return {name: value for name, value in params.items() if name not in RUN_SETTINGS}


def parse_run_settings(step: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The step's run settings (experiment_name, tensorboard), parsed; the steps that lack one do not get it."""
    return {spec.name: spec.parse(raw.get(spec.name, spec.default)) for spec in STEPS[step]
            if spec.name in RUN_SETTINGS}


def step_arguments(step: str, params: dict[str, Any]) -> dict[str, Any]:
    """The step function's arguments from its parsed parameters: the settings grouped into their dataclasses
    (the recipe resolved once, here), `spark_master` as the cluster it names (checked now, before any work), the
    rest (run ids, URIs, seed, paths) as they are."""
    params = dict(params)
    cluster = {"cluster": _cluster(params.pop("spark_master"))} if "spark_master" in params else {}
    if step not in SETTINGS_STEPS:
        return params | cluster
    if step == "evaluate":
        return {"featurize_run_id": params["featurize_run_id"], "encoder_uri": params["encoder_uri"],
                "settings": _settings(EvaluateSettings, params), "seed": params["seed"]}
    if step == "featurize":
        return {"settings": _settings(FeaturizeSettings, params)} | cluster
    pretrain = _settings(PretrainSettings, params, recipe=_recipe(params))
    if step == "pretrain":
        return {"featurize_run_id": params["featurize_run_id"], "settings": pretrain, "seed": params["seed"]}
    featurize = _settings(FeaturizeSettings, params)
    runs = {name: params[name] for name in ("num_simulations", "parallel_simulations", "results_path")}
    if step == "main":
        return {"settings": MainSettings(featurize, pretrain, _settings(EvaluateSettings, params), **runs)} | cluster
    given = tuple((name, params[name]) for name in RECIPE_OPTIONS if params.get(name) is not None)
    return {"settings": SweepSettings(  # each cell has its own recipe and labelled_per_word
        featurize, pretrain, _settings(EvaluateSettings, params, labelled_per_word=0),
        recipes=tuple(params["recipes"]), position_loss_weights=tuple(params["position_loss_weights"]),
        labelled_per_word=tuple(params["labelled_per_word"]), given=given, **runs)} | cluster


def _cluster(master: str):
    """The Spark cluster of a spark_master parameter (runs.spark.Cluster, checked), None for an empty one."""
    if not master:
        return None
    from spatial_ae.runs.spark import cluster

    return cluster(master)


SETTINGS_STEPS = ("featurize", "pretrain", "evaluate", "main", "sweep")


def arguments(step: str, raw: dict[str, Any]) -> dict[str, Any]:
    """`step_arguments` of the raw (command-line) values: parsed, checked, grouped."""
    return step_arguments(step, parse_step_params(step, raw))


def _settings(kind: type, params: dict[str, Any], **values: Any):
    """A settings dataclass from the parameters of the same names (`values` given instead)."""
    return kind(**{spec.name: params[spec.name] for spec in fields(kind) if spec.name in params} | values)


def _recipe(params: dict[str, Any]) -> Recipe:
    return resolve_recipe(params.get("recipe", "paper"),
                          **{name: params.get(name) for name in RECIPE_OPTIONS})


MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are unsigned 32-bit


def check_step_params(step: str, params: dict[str, Any]) -> None:
    """Checks that involve more than one parameter or the machine (cores, paths), before any work (and before
    TensorFlow is imported: it takes seconds)."""
    import os
    from pathlib import Path

    results_path = params.get("results_path")
    if step in ("main", "sweep", "summarize") and results_path and Path(results_path).expanduser().exists() \
            and not Path(results_path).expanduser().is_dir():
        raise ParameterError(f"parameter results_path={results_path!r} is an existing file, not a folder; "
                             f"pass -P results_path=<a folder, new or existing> or move the file")
    if step == "kws" and not Path(params["data_dir"]).expanduser().is_dir():
        raise ParameterError(f"parameter data_dir={params['data_dir']!r} is not a folder; pass -P data_dir=<a folder "
                             f"with one sub-folder of WAV clips per word>")
    if step == "predict" and not Path(params["inputs"]).expanduser().exists():
        raise ParameterError(f"parameter inputs: {Path(params['inputs']).expanduser()} does not exist; pass "
                             f"-P inputs=<a .wav file or a folder of them>")
    if step == "embed":
        from spatial_ae.steps.embed import check_embed_paths

        check_embed_paths(params["corpus"], params["output_path"], params["spark_master"])
    seed, simulations = params.get("seed"), params.get("num_simulations", 1)
    if seed is not None and seed + simulations - 1 > MAX_SEED:
        raise ParameterError(f"parameter seed={seed} with num_simulations={simulations}: simulation k uses seed + k - 1, "
                             f"which must not exceed {MAX_SEED}; pass -P seed={max(0, MAX_SEED - simulations + 1)} "
                             f"or smaller")
    requested, cores = params.get("parallel_simulations"), os.cpu_count() or 1
    if requested is not None and requested > cores:
        raise ParameterError(f"parameter parallel_simulations={requested} is more than this machine's {cores} CPU "
                             f"cores (each simulation is a TensorFlow worker process); pass -P parallel_simulations="
                             f"{cores} or less (0 = one per core)")


MLPROJECT_HEADER = """\
# Made by spatial_ae.params.mlproject_text(); after changing a parameter there, regenerate it with
#   python -c "from spatial_ae.params import mlproject_text; open('MLproject', 'w').write(mlproject_text())"
# Numbers are MLflow's `float` (its only numeric type); the steps check whole numbers and ranges.
# Optional parameters (empty = from the recipe or the dataset) are not declared: `mlflow run -P name=value` passes
# them on as `--name value` and logs them only when given, so no run logs an empty value.
"""


def mlproject_text() -> str:
    """The MLproject file, made from the parameters above (a test keeps the committed file equal to it)."""
    lines = [MLPROJECT_HEADER + "name: spatial_ae", "", "python_env: python_env.yaml", "", "entry_points:"]
    for step, specs in STEPS.items():
        specs = [spec for spec in specs if not spec.optional]
        lines += [f"  {step}:", "    parameters:"]
        for spec in specs:
            kind = "string" if spec.kind in (str, bool) else "float"
            default = "" if spec.default is None else f", default: {_yaml_default(spec)}"
            lines.append(f"      {spec.name}: {{type: {kind}{default}}}")
        arguments = " ".join(f"--{spec.name} {{{spec.name}}}" for spec in specs)
        lines.append(f"    command: \"python entrypoints/{step}.py {arguments}\"")
    return "\n".join(lines) + "\n"


def _yaml_default(spec: Param) -> str:
    """A default as YAML: numbers bare, booleans and strings quoted ("false", "paper")."""
    if spec.kind in (int, float) and spec.list_of is None:
        return f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)
    return f'"{str(spec.default).lower() if spec.kind is bool else spec.default}"'
