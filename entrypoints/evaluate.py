"""Entry point of the evaluate step (see MLproject); parameters: python entrypoints/evaluate.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
