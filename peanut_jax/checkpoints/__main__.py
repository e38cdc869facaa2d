"""``python -m peanut_jax.checkpoints list|fetch|import|info``."""

import sys

from peanut_jax.checkpoints.cli import main

sys.exit(main())
