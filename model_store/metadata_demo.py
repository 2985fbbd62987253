"""`python -m model_store.metadata_demo`, kept as the command users know. Build the metadata
demo: model_store/demos/metadata_demo.py.
"""

import sys

from model_store.demos.metadata_demo import main

if __name__ == "__main__":
    sys.exit(main())
