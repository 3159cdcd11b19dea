"""``python -m taskyard.serve`` is ``taskyard serve``."""

import sys

from taskyard.serve.app import serve_main

sys.exit(serve_main(sys.argv[1:]))
