"""``python -m pyromm``: the pyromm command line (see :mod:`pyromm.cli`)."""
import sys

from pyromm.cli import main

if __name__ == "__main__":
    sys.exit(main())
