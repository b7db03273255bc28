"""`python -m cortado.cli`: the `cortado` command."""

import sys

from cortado.cli import main

sys.exit(main())
