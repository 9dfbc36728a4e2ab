"""`python -m attnjax.compare DIR ...`, the same as `attnjax compare DIR ...`."""

import sys

from attnjax.compare.cli import main

sys.exit(main())
