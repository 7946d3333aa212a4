"""`python -m spatial_ae <step> --name value ...`: a step from the command line (MLproject runs
`entrypoints/<step>.py`, the same `cli.main`)."""
import sys

from spatial_ae.cli import main_with_step

if __name__ == "__main__":
    sys.exit(main_with_step(sys.argv[1:]))
