"""``python -m tomolab``: the same as the ``tomolab`` command."""

import sys

from tomolab.cli import main

if __name__ == "__main__":
    sys.exit(main())
