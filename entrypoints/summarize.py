"""Entry point of the summarize step (see MLproject); parameters: python entrypoints/summarize.py --help."""
import sys

from spatial_ae.cli import main

if __name__ == "__main__":
    sys.exit(main("summarize"))
