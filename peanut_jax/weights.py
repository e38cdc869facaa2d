"""``python -m peanut_jax.weights list|fetch|import|info``: alias of ``python -m peanut_jax.checkpoints``
(the weight registry lives in :mod:`peanut_jax.checkpoints`)."""

import sys

from peanut_jax.checkpoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
