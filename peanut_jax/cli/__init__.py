"""The command line: ``infer.py`` commands (one parser, one flag vocabulary: ``docs/cli.md``),
manifest / folder batch mode and the bundled demo.  ``infer.py`` only calls :func:`main`."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv=None, interrupt=None) -> int:
    """Run one command; returns the exit status.  Errors are one line on stderr (exit 2).
    ``interrupt``: a :class:`peanut_jax.pipeline.common.InterruptExit` (the script installs one)
    to tell that the main thread handles a Ctrl-C itself."""
    from peanut_jax.checkpoints.entry import DownloadError
    from peanut_jax.cli.commands import dispatch
    from peanut_jax.cli.parser import COMMANDS, build_parser, normalize
    from peanut_jax.pipeline.common import enable_compilation_cache
    from peanut_jax.pipeline.telemetry import announce_compiles

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(description="peanut_jax inference: mask -> erase -> upscale -> interpolate, and flow.")
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help") and argv[0] not in COMMANDS:
        argv = ["run"] + argv  # no command: the end-to-end chain
    args = parser.parse_args(argv)
    try:
        normalize(args)
        announce_compiles(enable_compilation_cache(off=args.no_compile_cache))
        return int(dispatch(args) or 0)
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
