"""Entry point of the predict step (see MLproject); parameters: python entrypoints/predict.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("predict"))
