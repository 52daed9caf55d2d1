"""`python -m ensemble_dfd.prepare`."""

import sys

from ensemble_dfd.prepare.cli import main

sys.exit(main())
