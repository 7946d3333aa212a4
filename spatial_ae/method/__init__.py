"""The method: position targets, recipes, networks, training and metrics; no MLflow runs opened here."""
