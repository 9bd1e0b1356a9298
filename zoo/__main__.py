"""``python -m zoo``: the ``zoo`` command (what torchrun starts: ``torchrun ... -m zoo run RECIPE``)."""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
