#!/usr/bin/env python
"""peanut_jax inference entry point (the commands and flags: ``docs/cli.md``).

python infer.py --input VIDEO --masks MASK_DIR --output OUT.mp4 [--upscale 4] [--interpolate 2]
python infer.py erase|upscale|interpolate|flow --input VIDEO --output OUT ...
python infer.py --demo
"""

from __future__ import annotations

import os
import sys

from peanut_jax.cli import main  # noqa: F401 - tests call infer.main

if __name__ == "__main__":
    from peanut_jax.pipeline.common import InterruptExit

    rc = main(interrupt=InterruptExit())
    sys.stdout.flush()
    sys.stderr.flush()
    if rc == 130:
        os._exit(rc)  # do not wait for compilations still running in worker threads
    sys.exit(rc)
