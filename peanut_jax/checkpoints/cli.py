"""``python -m peanut_jax.checkpoints`` (alias ``python -m peanut_jax.weights``): list the registry,
fetch (download + verify + convert, or install files such as the tokenizer's as they are), import
a manual download, show one entry."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from peanut_jax.checkpoints import registry
from peanut_jax.checkpoints.download import fetch, import_file
from peanut_jax.checkpoints.entry import WeightEntry


def _status(e: WeightEntry) -> str:
    if e.bundled is not None:
        return "bundled" if registry.converted_dir(e.name) is not None else "missing"
    if registry.converted_dir(e.name) is not None:
        return "converted" if e.convert else "cached"
    kept = [registry.download_path(e.name, f) for f in e.all_files]
    if all(p.is_file() for p in kept):
        return "downloaded"
    if any(p.is_file() or p.with_name(p.name + ".part").is_file() for p in kept):
        return "partial"
    return "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cmd_list(args) -> int:
    if args.json:
        rows = [
            {**dataclasses.asdict(e), "status": _status(e), "download_path": str(registry.download_path(e.name))}
            for e in registry.entries()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    rows = [("NAME", "MODEL", "FILE", "CHECK", "GET", "STATUS")]
    for e in registry.entries():
        check = {"sha256": "sha256", "sha256-prefix": f"prefix:{e.sha256_prefix}", "size": "size", "none": "-"}[e.check]
        get_ = "bundled" if e.bundled else "manual" if e.manual else "http"
        files = e.bundled_path.name if e.bundled else ",".join(e.all_files)
        rows.append((e.name, e.model, files, check, get_, _status(e)))
    print(_table(rows))
    aliases = ", ".join(f"{a} -> {b}" for a, b in sorted(registry.aliases().items()))
    print(f"\ncache: {registry.home()}  (aliases: {aliases})")
    print("bundled: *_demo weights ship with peanut_jax (no download); every --checkpoint* flag takes these names")
    print("files: entries of several files (e.g. the tokenizer gpt2_bpe) are kept as downloaded, not converted")
    return 0


def _cmd_info(args) -> int:
    e = registry.get(args.name)
    for k, v in dataclasses.asdict(e).items():
        if v not in (None, (), "", False) or k in ("manual", "convert"):
            print(f"{k:14s} {', '.join(v) if isinstance(v, (tuple, list)) else v}")
    if not e.bundled:
        print(f"{'download_path':14s} {registry.download_path(e.name)}")
    print(f"{'converted' if e.convert else 'cached':14s} {registry.converted_dir(e.name) or '-'}")
    return 0


def _cmd_fetch(args) -> int:
    for n in args.names:
        print(fetch(n, force=args.force, progress=not args.quiet))
    return 0


def _cmd_import(args) -> int:
    print(import_file(args.name, *args.files, force=args.force))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peanut_jax.weights",
        description="Official checkpoints and tokenizer files: list, fetch (download + verify + convert), "
        "import a manual download.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="table of the registry and cache status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="everything about one entry")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser(
        "fetch", help="download, verify and convert or install (prints the converted / installed directory)"
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="download and convert again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("import", help="verify and convert a file downloaded by hand (every file of a files entry)")
    p.add_argument("name")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_import)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted (a partial download is kept for resume; nothing was cached)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
