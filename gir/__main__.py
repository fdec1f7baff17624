"""`python -m gir` is the `gir` command."""
import sys

from gir.cli import main

if __name__ == "__main__":  # data workers are spawned and re-import the main module
    sys.exit(main())
