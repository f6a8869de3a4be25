"""`python -m search.cli ARGS`: the `mentee` command, as the tests run it in subprocesses."""

import sys

from search.cli import main

sys.exit(main())
