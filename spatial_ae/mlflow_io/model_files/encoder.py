"""Loads the registered audio encoder: MLflow runs this file instead of unpickling a model object."""
from mlflow.models import set_model

from spatial_ae.mlflow_io.pyfunc import AudioEncoder

set_model(AudioEncoder())
