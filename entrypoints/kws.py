"""The kws step, as MLproject runs it: python entrypoints/kws.py --name value ... (--help lists them)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's spatial_ae, not an installed one
from spatial_ae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("kws"))
