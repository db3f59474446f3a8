"""``python -m sinet_train`` (also ``torchrun -m sinet_train``): the ``sinet-train`` command."""
import sys

from sinet_cli.train import main

sys.exit(main())
