"""``python -m quantcheck``: ``python -m harness`` under the installed name (see harness/__main__.py)."""

import sys

from quantcheck.harness.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
