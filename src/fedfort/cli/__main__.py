"""``python -m fedfort.cli``: the ``fedfort`` command."""

import sys

from fedfort.cli.app import main

sys.exit(main())
