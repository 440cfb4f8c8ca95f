"""``python -m adapter``: the same as the ``rems-adapter`` command."""

import sys

from adapter.cli import main

sys.exit(main())
