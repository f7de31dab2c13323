"""``python -m lenet_ext.bench`` is ``lenet-ext bench``."""

import sys

from .cli import main

sys.exit(main())
