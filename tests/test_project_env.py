"""`mlflow run` without `--env-manager local`, as users type it: MLflow builds a virtualenv from python_env.yaml.

MLflow names its virtualenvs after the requirements alone, so a second checkout reuses the environment the first
one built, with the first one installed in it (editable). The steps must still run the second checkout's code.
"""
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, SMALL_CLIPS_PER_WORD


def pyenv_holds_this_python() -> bool:
    """MLflow's virtualenv manager asks pyenv for this Python's exact version (python_env.yaml names none)."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return False
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    return (Path(root) / "versions" / platform.python_version() / "bin" / "python").exists()


pytestmark = pytest.mark.skipif(
    not pyenv_holds_this_python(),
    reason=f"needs pyenv with Python {platform.python_version()} installed: otherwise MLflow would download and "
           f"compile it")


def copy_checkout(destination: Path) -> Path:
    """The files a clone of this checkout would hold (tracked and not ignored), without its outputs."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for name in filter(None, listing.split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def plain_mlflow_run(project: Path, env_root: Path, seed: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", "featurize",
               "--experiment-id", os.environ["MLFLOW_EXPERIMENT_ID"], "-P", "dataset=synthetic",
               "-P", f"synthetic_clips_per_word={SMALL_CLIPS_PER_WORD}", "-P", "unlabeled_set_size=100",
               "-P", "lbl_trai_size=10", "-P", "lbl_test_size=20", "-P", f"seed={seed}"]
    environment = {**os.environ, "MLFLOW_ENV_ROOT": str(env_root)}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment,
                          cwd=project.parent)


def test_plain_mlflow_run_builds_a_virtualenv_and_runs_its_own_checkout(sqlite_tracking, small_synthetic_corpus,
                                                                        tmp_path):
    env_root = tmp_path / "envs"
    first_checkout = copy_checkout(tmp_path / "first" / "spatial_ae")
    second_checkout = copy_checkout(tmp_path / "second" / "spatial_ae")

    first = plain_mlflow_run(first_checkout, env_root, seed=0)
    assert first.returncode == 0, first.stderr[-3000:]
    environments = list(env_root.iterdir())
    assert len(environments) == 1, environments

    shutil.rmtree(first_checkout)  # the environment's editable install now points nowhere
    second = plain_mlflow_run(second_checkout, env_root, seed=1)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already exists" in second.stderr and list(env_root.iterdir()) == environments

    runs = MlflowClient().search_runs([sqlite_tracking["experiment_id"]], order_by=["attributes.start_time"])
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert {run.data.tags["mlflow.project.env"] for run in runs} == {"virtualenv"}
    assert [run.data.params["seed"] for run in runs] == ["0", "1"]
    assert all(run.data.metrics["clips_unlabelled"] == 100 for run in runs)
