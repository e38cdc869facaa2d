#!/usr/bin/env python
"""peanut_jax inference entry point.

    python infer.py flow --demo --output flow_demo.mp4
    python infer.py flow --input VIDEO --checkpoint spynet.pth --output flow.mp4
    python infer.py --input VIDEO --masks MASK_DIR --output OUT.mp4   (the end-to-end chain, = ``run``)

Every stage module in ``peanut_jax.pipeline`` that exposes ``register_cli`` becomes a sub-command.
Errors are reported as one line on stderr with a non-zero exit; outputs are written atomically.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

STAGES = ("flow", "erase", "upscale", "interpolate", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infer.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for stage in STAGES:
        try:
            mod = importlib.import_module(f"peanut_jax.pipeline.{stage}")
        except ModuleNotFoundError as err:
            if err.name == f"peanut_jax.pipeline.{stage}":
                continue  # stage not available in this build
            raise
        if hasattr(mod, "register_cli"):
            mod.register_cli(sub)
    return parser


def main(argv=None, interrupt=None) -> int:
    """Run one command; returns the exit status.  ``interrupt``: a
    :class:`peanut_jax.pipeline.common.InterruptExit` (the script installs one) to tell that the
    main thread handles a Ctrl-C itself."""
    from peanut_jax.pipeline.common import announce_compilation, enable_compilation_cache
    from peanut_jax.weights import DownloadError
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help") and "run" in parser._subparsers._group_actions[0].choices:
        argv = ["run"] + argv  # no sub-command: the end-to-end chain
    args = parser.parse_args(argv)
    try:
        announce_compilation(enable_compilation_cache())
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if interrupt is not None:
            interrupt.handled()
        print("error: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, DownloadError) as err:
        msg = str(err).strip().splitlines()
        print(f"error: {msg[0] if msg else type(err).__name__}", file=sys.stderr)
        for extra in msg[1:]:
            print(f"  {extra}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from peanut_jax.pipeline.common import InterruptExit
    rc = main(interrupt=InterruptExit())
    sys.stdout.flush()
    sys.stderr.flush()
    if rc == 130:
        os._exit(rc)   # do not wait for compilations still running in worker threads
    sys.exit(rc)
