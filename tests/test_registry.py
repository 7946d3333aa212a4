"""The registered models' requirements; aliases stay right when several workers register at once."""
import ast
import importlib.metadata
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow.tracking import MlflowClient

from spatial_ae.mlflow_io.registry import (CHAMPION, NEWEST, converge_alias, newest_version, pinned_requirements,
                                           record_accuracy, update_champion)
from spatial_ae.names import ACCURACY_TAG, SELECTION_TAG

NAME = "alias-test-encoder"


def imported_top_level_names(source_file: str) -> set[str]:
    """Top-level names of the absolute imports anywhere in a file, function bodies included, but not the optional
    ones (inside a `try` that catches ImportError)."""
    tree = ast.parse(Path(source_file).read_text())
    optional = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
                and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                        for h in node.handlers)
                for statement in node.body for inner in ast.walk(statement)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "spatial_ae"}


def normalized(distribution: str) -> str:
    """A distribution's name as pip compares it (PEP 503): tensorflow_cpu is tensorflow-cpu."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_the_pinned_requirements_hold_every_package_the_registered_models_import():
    """`mlflow models serve` without `--env-manager local` installs these pins and nothing else."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, spatial_ae.mlflow_io.pyfunc\n"
                               "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
                               "if n.startswith('spatial_ae') and getattr(m, '__file__', None)))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert any(path.endswith("pyfunc.py") for path in loaded) and any(p.endswith("features.py") for p in loaded)
    pinned = {normalized(pin.split("==")[0]) for pin in pinned_requirements()}
    distributions = importlib.metadata.packages_distributions()
    for module_file in loaded:
        for name in imported_top_level_names(module_file):
            providers = {normalized(d) for d in distributions.get(name, [name])}
            assert providers & pinned, f"{module_file} imports {name} ({providers}), not in {sorted(pinned)}"


def test_a_stale_alias_write_is_corrected(sqlite_tracking):
    """A slow worker that set `newest` to its own, older version after a newer one was registered."""
    client = MlflowClient()
    client.create_registered_model(NAME)
    for accuracy in (0.5, 0.7, 0.7):
        version = client.create_model_version(NAME, source="unused").version
        client.set_model_version_tag(NAME, version, SELECTION_TAG, str(accuracy))
    client.set_registered_model_alias(NAME, NEWEST, "1")
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    assert converge_alias(NAME, NEWEST, newest_version) == "3"
    assert client.get_model_version_by_alias(NAME, NEWEST).version == 3
    assert update_champion(NAME) == "2"  # best accuracy, ties to the older version
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == 2


def test_concurrent_registrations_end_on_the_newest(sqlite_tracking):
    client = MlflowClient()
    client.create_registered_model(NAME)

    def register_one(_):
        MlflowClient().create_model_version(NAME, source="unused")
        return converge_alias(NAME, NEWEST, newest_version)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(register_one, range(8)))
    assert client.get_model_version_by_alias(NAME, NEWEST).version == 8


def test_champion_is_chosen_on_validation_not_test_accuracy(sqlite_tracking):
    """Issue 23 item 2: the test clips must not choose the champion (leakage); both accuracies are tagged."""
    client = MlflowClient()
    client.create_registered_model(NAME)
    for test_accuracy, validation_accuracy in ((0.9, 0.4), (0.5, 0.6)):
        version = client.create_model_version(NAME, source="unused").version
        record_accuracy(f"models:/{NAME}/{version}", test_accuracy, validation_accuracy)
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == 2
    tags = client.get_model_version(NAME, "1").tags
    assert (tags[ACCURACY_TAG], tags[SELECTION_TAG]) == ("0.900000", "0.400000")
