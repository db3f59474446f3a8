"""``python -m sinet_train`` (also ``torchrun -m sinet_train``): the ``sinet-train`` command."""
import sys

from .cli import main

sys.exit(main())
