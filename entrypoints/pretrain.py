"""Entry point of the pretrain step (see MLproject); parameters: python entrypoints/pretrain.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("pretrain"))
