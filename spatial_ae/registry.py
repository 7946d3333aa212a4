"""The encoder registry: log an encoder, register it, and keep the `champion` and `newest` aliases right.

MLflow reserves the alias `latest`; `models:/spatial-ae-encoder/latest` already names the newest version,
and the alias `newest` names it too.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

ENCODER_NAME = os.environ.get("SPATIAL_AE_ENCODER_NAME", "spatial-ae-encoder")  # the registered model
CHAMPION, NEWEST = "champion", "newest"
ACCURACY_TAG = "downstream_accuracy"  # the embedding DNN's test accuracy: reported, never used to choose
SELECTION_TAG = "validation_accuracy"  # its accuracy on the early-stopping clips: what `champion` is chosen on
PACKAGE_DIR = Path(__file__).resolve().parent


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
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "encoder.keras"
        encoder.save(keras_file)
        audio_uri = log_audio_model("encoder", "encoder.py", {"keras_encoder": keras_file})
    return audio_uri, keras_info.model_uri


def log_audio_model(name: str, model_file: str, artifacts: dict[str, Path]) -> str:
    """Log a raw-audio pyfunc as models-from-code (`model_files/<model_file>` is what loading runs) with its
    Keras weights as `.keras` artifacts: loading unpickles nothing. Returns the model URI."""
    info = mlflow.pyfunc.log_model(name=name, python_model=str(PACKAGE_DIR / "model_files" / model_file),
                                   artifacts={key: str(path) for key, path in artifacts.items()},
                                   code_paths=[str(PACKAGE_DIR)], pip_requirements=pinned_requirements())
    return info.model_uri


def register(model_uri: str, tags: dict[str, str], name: str = ENCODER_NAME) -> str:
    """Register `model_uri` as a new version of `name`, alias it `newest`; returns its `models:/name/N` URI."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
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
    update_champion(name)


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
