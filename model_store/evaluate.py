"""`python -m model_store.evaluate`, kept as the command users know. Evaluate a model on a
folder: the CLI lives in model_store/evaluation/evaluate.py.
"""

import sys

from model_store.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
