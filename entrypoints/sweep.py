"""Entry point of the sweep step (see MLproject); parameters: python entrypoints/sweep.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("sweep"))
