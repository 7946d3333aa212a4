"""How many simulation workers run, and TensorFlow's thread pools sized for them (spatial_ae/parallel.py).

The workers themselves are exercised end to end in test_workflow.py (two simulations at once) and
test_reliability.py (stopped and crashed workers)."""
import json
import os
import subprocess
import sys

import pytest

from spatial_ae.runs.parallel import simulation_processes
from tests.conftest import REPO

THREADS = """
import json, sys
from spatial_ae.runs.parallel import configure_threads
import tensorflow as tf
configure_threads(int(sys.argv[1]))
print(json.dumps([tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads()]))
"""


def thread_pools(processes: int, **env) -> list[int]:
    """(intra-op, inter-op) threads after configure_threads(processes) in a fresh process (0 = TF's default)."""
    result = subprocess.run([sys.executable, "-c", THREADS, str(processes)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_one_worker_per_core_by_default_never_more_than_simulations():
    cores = os.cpu_count()
    assert simulation_processes(0, 100) == cores
    assert simulation_processes(0, 1) == 1
    assert simulation_processes(3, 2) == 2
    assert simulation_processes(3, 10) == 3
    assert simulation_processes(1, 10) == 1
    assert simulation_processes(0, 0) == 1


def test_thread_pools_share_the_cores_between_processes():
    cores = os.cpu_count()
    assert thread_pools(1) == [max(1, cores // 2), min(2, cores)]
    share = max(1, cores // 2)
    assert thread_pools(2) == [max(1, share // 2), min(2, share)]


@pytest.mark.parametrize("variable", ["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"])
def test_thread_variables_set_by_the_user_win(variable):
    assert thread_pools(1, **{variable: "3"}) == [0, 0]  # left to TensorFlow, which reads the variable


WORKER_LOGGING = """
import logging, sys
from spatial_ae.runs import parallel
import tensorflow as tf  # as in a spawned worker: TensorFlow imported before any logging set-up
parallel.start_worker(sys.argv[1], "0", "fast", 2, logging.INFO)
tf.get_logger().warning("a TensorFlow warning")
"""


def test_worker_prints_tensorflow_messages_once_with_its_name(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run([sys.executable, "-c", WORKER_LOGGING, uri], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "a TensorFlow warning" in line]
    assert len(lines) == 1 and "WARNING MainProcess tensorflow: a TensorFlow warning" in lines[0], lines
