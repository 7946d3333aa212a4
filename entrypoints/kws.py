"""Entry point of the kws step (see MLproject); parameters: python entrypoints/kws.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("kws"))
