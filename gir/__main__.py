"""`python -m gir` is the `gir` command."""
import sys

from gir.cli import main

sys.exit(main())
