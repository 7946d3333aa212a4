"""The files MLflow runs to load the registered pyfunc models (models-from-code: no pickle is ever loaded)."""
