"""`python -m spatial_ae <step> --name value ...`, the command MLproject runs.

`mlflow run` starts it in the project's folder, so Python imports this checkout's `spatial_ae`, not a copy an
environment holds: MLflow keys its virtualenvs by the requirements alone, and one built for another checkout has
that checkout installed.
"""
import sys

from spatial_ae.cli import main_with_step

if __name__ == "__main__":
    sys.exit(main_with_step(sys.argv[1:]))
