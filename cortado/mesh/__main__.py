"""`python -m cortado.mesh`: the local mesh in the foreground (cortado.mesh.cli)."""

import sys

from cortado.mesh.cli import main

sys.exit(main())
