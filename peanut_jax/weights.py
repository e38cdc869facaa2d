"""``python -m peanut_jax.weights list|fetch|import|info``: alias of ``python -m peanut_jax.checkpoints``
(the weight registry lives in :mod:`peanut_jax.checkpoints.registry`)."""
import sys

from peanut_jax.checkpoints.export import module_kwargs as _module_kwargs  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import *  # noqa: F401,F403  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import DEMO_WEIGHTS, main  # noqa: F401  # SHIM: moved (issue 12)

if __name__ == "__main__":
    sys.exit(main())
