"""`python -m pldrop ...` (also what torchrun launches: `torchrun ... -m pldrop pretrain ...`)."""

import sys

from .cli import main

sys.exit(main())
