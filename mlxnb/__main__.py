"""``python -m mlxnb``: the command line (see :mod:`mlxnb._server.cli`)."""

from __future__ import annotations

import sys

from mlxnb._server.cli import main

if __name__ == "__main__":
    sys.exit(main())
