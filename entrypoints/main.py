"""Entry point of the main step (see MLproject); parameters: python entrypoints/main.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("main"))
