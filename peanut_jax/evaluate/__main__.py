"""``python -m peanut_jax.evaluate``: see :mod:`peanut_jax.evaluate.cli`."""

import sys

from peanut_jax.evaluate.cli import main

sys.exit(main())
