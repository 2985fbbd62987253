"""`python -m model_store.export`, kept as the command users know. Export a model: the CLI
lives in model_store/exporting/cli.py.
"""

import sys

from model_store.exporting.cli import main

if __name__ == "__main__":
    sys.exit(main())
