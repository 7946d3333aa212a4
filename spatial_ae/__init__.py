"""Spatial AE: the spatial position constraint for unsupervised speech representations (Humayun et al., 2021),
as MLflow steps: featurize, pretrain, evaluate, summarize, main, sweep, kws, predict."""

import os

__version__ = "0.1.0"

# MLflow's usage telemetry off unless the user sets it: every worker process would otherwise start a thread that
# contacts mlflow.org, network work the experiments do not need and that can fail on offline machines.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
