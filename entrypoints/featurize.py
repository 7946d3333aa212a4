"""Entry point of the featurize step (see MLproject); parameters: python entrypoints/featurize.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("featurize"))
