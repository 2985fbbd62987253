"""`python -m model_store.demo`, kept as the command users know. Build the demo model:
model_store/demos/demo.py.
"""

import sys

from model_store.demos.demo import main

if __name__ == "__main__":
    sys.exit(main())
