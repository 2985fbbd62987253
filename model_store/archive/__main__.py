import sys

from model_store.archive.cli import main

if __name__ == "__main__":
    sys.exit(main())
