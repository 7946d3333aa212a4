"""Entry point of the embed step (see MLproject); parameters: python entrypoints/embed.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("embed"))
