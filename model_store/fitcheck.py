"""`python -m model_store.fitcheck`, kept as the command users know. The fit check: the CLI
lives in model_store/fitting/cli.py.
"""

import sys

from model_store.fitting.cli import main

if __name__ == "__main__":
    sys.exit(main())
