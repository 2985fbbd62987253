"""`python -m model_store.audit`, the shortcut audit: the CLI lives in
model_store/evaluation/audit/cli.py.
"""

import sys

from model_store.evaluation.audit.cli import main

if __name__ == "__main__":
    sys.exit(main())
