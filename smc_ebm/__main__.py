"""``python -m smc_ebm``: the ``smc-ebm`` command line."""

import sys

from smc_ebm.cli import main

sys.exit(main())
