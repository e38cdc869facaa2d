"""Moved to :mod:`peanut_jax.cli.demo` (issue 12); ``python -m peanut_jax.pipeline.demo`` still works."""
import sys

from peanut_jax.cli.demo import (ASSETS, DEFAULT_SETTINGS, METRICS_FILE, OFFICIAL, choose_weights,  # noqa: F401  # SHIM
                                 demo_clip, main, main_from_args, measure, recorded, run_demo, settings)

if __name__ == "__main__":
    sys.exit(main())
