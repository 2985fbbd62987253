"""`python -m model_store.calibrate`: calibrate a model on your own labelled photographs; the
CLI lives in model_store/calibration/cli.py.
"""

import sys

from model_store.calibration.cli import main

if __name__ == "__main__":
    sys.exit(main())
