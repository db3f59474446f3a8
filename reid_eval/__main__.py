"""``python -m reid_eval`` (also ``torchrun -m reid_eval``): the ``sinet-eval`` command."""
import sys

from sinet_cli.eval import main

sys.exit(main())
