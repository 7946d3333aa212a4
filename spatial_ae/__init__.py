"""Spatial AE: the spatial position constraint for unsupervised speech representations (Humayun et al., 2021),
as MLflow steps: featurize, pretrain, evaluate, summarize, main, sweep, kws, predict."""

__version__ = "0.1.0"
