"""Steps: featurize, pretrain, evaluate, summarize (with plots), kws and embed, each one MLflow run."""
