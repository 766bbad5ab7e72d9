"""`python -m annrepro`: the `annrepro` command line."""

import sys

from .cli import main

sys.exit(main())
