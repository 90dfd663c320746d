"""``python -m edge_anomaly.cli``: what ``serve`` re-executes itself with, and what the tests run."""

import sys

from . import main

sys.exit(main())
