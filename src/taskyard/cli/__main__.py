"""``python -m taskyard.cli …``: what ``taskyard serve`` and the tests start as a subprocess."""

import sys

from taskyard.cli import main

sys.exit(main())
