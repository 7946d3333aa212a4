"""MLflow I/O: runs and their reuse, the experiment, the registry and the pyfunc models it serves."""
