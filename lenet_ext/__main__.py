"""``python -m lenet_ext`` is the ``lenet-ext`` command (also under ``torchrun ... -m lenet_ext``)."""

import sys

from .cli import main

sys.exit(main())
