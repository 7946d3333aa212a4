"""The encoder registry: log an encoder, register it, and keep the `champion` and `newest` aliases right.

MLflow reserves the alias `latest`; `models:/spatial-ae-encoder/latest` already names the newest version,
and the alias `newest` names it too.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import tempfile
import warnings
from typing import TYPE_CHECKING
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from mlflow.tracking import MlflowClient

from spatial_ae.errors import UserError
from spatial_ae.names import ACCURACY_TAG, CI_TAG, SELECTION_TAG
from spatial_ae.settings import RECIPE_OPTIONS

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

ENCODER_NAME = os.environ.get("SPATIAL_AE_ENCODER_NAME", "spatial-ae-encoder")  # the registered model
CHAMPION, NEWEST = "champion", "newest"
INPUTS = ("Raw audio, one clip per row: a 2-D float array (clips x samples) or a list of 1-D arrays of 16 kHz samples "
          "in [-1, 1] (signed integers are read as PCM); or WAV paths (a list, or a DataFrame with a `path` column), "
          "read only under the folder SPATIAL_AE_AUDIO_ROOT names. Each clip is padded or cut to 1 s. MLflow's schemas "
          "cannot state this choice of inputs, so the signature gives the outputs and the model checks its inputs.")
DESCRIPTIONS = {  # registered model -> its description
    ENCODER_NAME: "Spatial AE encoder (Humayun et al. 2021): an auto-encoder on MFCC trained with a position head; "
                  "turns speech clips into embeddings for keyword spotting.\n\nInputs: " + INPUTS +
                  "\n\nOutputs: float32 embeddings, one row per clip (75 values in the paper's recipe).\n\n"
                  "Aliases: `champion` (best validation accuracy of the DNN probe), `newest`. Each version's "
                  "description is its model card.",
}
KWS_DESCRIPTION = ("Keyword spotter: a registered Spatial AE encoder and a DNN classifier on its embeddings.\n\n"
                   "Inputs: " + INPUTS + "\n\nOutputs: a table with `word` (the most likely keyword) and "
                   "`confidence` (its softmax probability), one row per clip.\n\nAliases: `champion`, `newest`.")
CARD_SECTIONS = {  # model card section -> the version tags it shows
    "Data": ("dataset", "featurize_run_id", "data_dir", "words"),
    "Recipe": ("recipe", *RECIPE_OPTIONS, "seed", "encoder_uri", "encoder_version_uri"),
    "Accuracy": (ACCURACY_TAG, SELECTION_TAG, CI_TAG),
    "Runs": ("pretrain_run_id", "kws_run_id", "keras_model_uri"),
}
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # spatial_ae/, shipped with every logged model


def pinned_requirements() -> list[str]:
    """The packages the registered models need, at the versions they were made with.

    A model served in an environment of its own gets these and nothing else: every package the code of
    `encoder_model` imports must be here (a test checks it).
    """
    pins = []
    for name in ("tensorflow-cpu", "keras", "numpy", "scipy", "soundfile", "pandas", "tqdm", "mlflow"):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            if name == "tensorflow-cpu":
                pins.append(f"tensorflow=={importlib.metadata.version('tensorflow')}")
    return pins


def log_encoder(encoder: keras.Model, example_mfcc: np.ndarray) -> tuple[str, str]:
    """Log the Keras encoder (MFCC in) and the raw-audio pyfunc wrapping it; returns their model URIs."""
    example = np.asarray(example_mfcc[:5], dtype=np.float32)
    keras_info = mlflow.keras.log_model(encoder, name="keras_encoder",
                                        signature=infer_signature(example, encoder.predict(example, verbose=0)),
                                        pip_requirements=pinned_requirements())
    log_model_summary(encoder, "encoder")
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, encoder.output_shape[-1]), "embedding")])
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "encoder.keras"
        encoder.save(keras_file)
        audio_uri = log_audio_model("encoder", "encoder.py", {"keras_encoder": keras_file}, outputs)
    return audio_uri, keras_info.model_uri


def log_model_summary(model: keras.Model, name: str) -> None:
    """The Keras `model.summary()` text, as the active run's artifact `model_summary/<name>.txt`."""
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    mlflow.log_text("\n".join(lines) + "\n", f"model_summary/{name}.txt")


def log_audio_model(name: str, model_file: str, artifacts: dict[str, Path], outputs: Schema) -> str:
    """Log a raw-audio pyfunc as models-from-code (`model_files/<model_file>` is what loading runs) with its
    Keras weights as `.keras` artifacts: loading unpickles nothing. Its signature has the `outputs` and no input
    schema (see INPUTS: MLflow would refuse the other kinds of input). Returns the model URI."""
    with warnings.catch_warnings():  # no input example, on purpose: see INPUTS
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        info = mlflow.pyfunc.log_model(name=name, python_model=str(PACKAGE_DIR / "mlflow_io" / "model_files" / model_file),
                                       artifacts={key: str(path) for key, path in artifacts.items()},
                                       signature=ModelSignature(inputs=None, outputs=outputs),
                                       code_paths=[str(PACKAGE_DIR)], pip_requirements=pinned_requirements())
    return info.model_uri


KWS_OUTPUTS = Schema([ColSpec("string", "word"), ColSpec("double", "confidence")])


def register(model_uri: str, tags: dict[str, str], name: str = ENCODER_NAME) -> str:
    """Register `model_uri` as a new version of `name` with its model card, alias it `newest`; returns its
    `models:/name/N` URI. The registered model gets its description."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    MlflowClient().update_registered_model(name, description=DESCRIPTIONS.get(name, KWS_DESCRIPTION))
    update_model_card(name, str(version.version))
    converge_alias(name, NEWEST, newest_version)
    log.info("registered %s version %s", name, version.version)
    return f"models:/{name}/{version.version}"


def registered_version(model_uri: str) -> tuple[str, str] | None:
    """(name, version) of a `models:/name/N` or `models:/name@alias` URI; None for other URIs."""
    if not model_uri.startswith("models:/") or model_uri.startswith("models:/m-"):
        return None
    rest = model_uri[len("models:/"):]
    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.partition("/")
    if version.lower() == "latest":
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return name, str(version)


def record_accuracy(model_uri: str, test_accuracy: float, validation_accuracy: float) -> None:
    """Tag a registered encoder with its downstream test and validation accuracies and move `champion` to the
    best version by validation accuracy: choosing on the test clips would leak them into the choice."""
    found = registered_version(model_uri)
    if found is None:
        return
    name, version = found
    client = MlflowClient()
    client.set_model_version_tag(name, version, ACCURACY_TAG, f"{test_accuracy:.6f}")
    client.set_model_version_tag(name, version, SELECTION_TAG, f"{validation_accuracy:.6f}")
    update_model_card(name, version)
    update_champion(name)


def record_confidence_interval(model_uri: str, text: str) -> None:
    """Tag a registered version with the accuracy of its configuration over the simulations (mean, 95% CI; known
    once they are summarised) and add it to its model card."""
    try:
        found = registered_version(model_uri)
        if found is not None:
            MlflowClient().set_model_version_tag(*found, CI_TAG, text)
            update_model_card(*found)
    except mlflow.exceptions.MlflowException as error:  # deleted since, or registered in another store
        log.warning("no model card updated for %s: %s", model_uri, str(error).splitlines()[0])


def update_model_card(name: str, version: str) -> None:
    """Write the version's model card (data, recipe, accuracy with its CI, runs; from its tags) as its description."""
    client = MlflowClient()
    tags = client.get_model_version(name, version).tags
    lines = [f"Model card of {name} version {version}. Inputs and outputs: see the registered model's description."]
    labels = {ACCURACY_TAG: "test accuracy of the DNN on its embeddings (this simulation)",
              SELECTION_TAG: "accuracy on the early-stopping clips (chooses `champion`)",
              CI_TAG: "test accuracy over the simulations of its configuration: mean [95% CI]"}
    for section, keys in CARD_SECTIONS.items():
        rows = [f"- {labels.get(key, key)}: {tags[key]}" for key in keys if key in tags]
        lines += ["", f"**{section}**", *(rows or ["- not known yet"])]
    client.update_model_version(name, version, description="\n".join(lines))


def newest_version(versions) -> str:
    """The highest version number among `versions`: what the alias `newest` names."""
    return str(max(int(v.version) for v in versions))


def update_champion(name: str = ENCODER_NAME) -> str | None:
    """Point `champion` at the version with the best validation accuracy (ties: the older version)."""
    def best(versions) -> str | None:
        scored = [(float(v.tags[SELECTION_TAG]), -int(v.version), str(v.version))
                  for v in versions if SELECTION_TAG in v.tags]
        return max(scored)[2] if scored else None

    return converge_alias(name, CHAMPION, best)


def converge_alias(name: str, alias: str, choose, attempts: int = 10) -> str | None:
    """Point `alias` at `choose(versions)` (None: leave it), re-reading after each write until the registry
    agrees: several workers may register and move aliases at once (a later write of an older choice, or two
    inserts of the same alias, which SQLite refuses), and all of them must end on the right version."""
    client = MlflowClient()
    wanted = None
    for _ in range(attempts):
        wanted = choose(client.search_model_versions(f"name='{name}'"))
        if wanted is None:
            return None
        try:
            if str(client.get_model_version_by_alias(name, alias).version) == wanted:
                return wanted
        except mlflow.exceptions.MlflowException:
            pass  # no such alias yet
        try:
            client.set_registered_model_alias(name, alias, wanted)
        except mlflow.exceptions.MlflowException as error:  # another worker set it at the same moment
            log.debug("alias %s of %s: concurrent update (%s), re-reading", alias, name, error)
    return wanted


def load(uri: str, loader, fix: str):
    """`loader(uri)`, its MLflow errors turned into a UserError naming the URI and the `fix`."""
    try:
        return loader(uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise UserError(f"cannot load {uri} ({str(error).splitlines()[0]}). Fix: {fix}") from None


def load_keras_encoder(encoder_uri: str) -> keras.Model:
    """The Keras encoder (MFCC in) behind a registered or logged encoder URI; a UserError naming the fix."""
    def loader(uri: str) -> keras.Model:
        try:
            return mlflow.pyfunc.load_model(uri).unwrap_python_model().encoder
        except (AttributeError, mlflow.exceptions.MlflowException):
            return mlflow.keras.load_model(uri)

    return load(encoder_uri, loader, f"pass -P encoder_uri=models:/{ENCODER_NAME}/N of a registered encoder (run "
                                     f"main or pretrain first)")
