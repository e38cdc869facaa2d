"""Batch mode: many clips through one loaded chain, from a manifest (CSV/JSON rows of ``video,
masks, output``) or from a folder of videos / frame folders (with a folder of mask folders of the
same names).  Every row's input and outputs are checked before the first row runs.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import sys

from peanut_jax.pipeline.chain import Chain
from peanut_jax.pipeline.outputs import check_output
from peanut_jax.pipeline.sources import FolderMasks, open_source
from peanut_jax.pipeline.telemetry import RunSummary

__all__ = [
    "MANIFEST_COLUMNS",
    "read_manifest",
    "folder_rows",
    "is_frame_folder",
    "check_rows",
    "run_rows",
    "run_manifest",
]

MANIFEST_COLUMNS = ("video", "masks", "output", "side_by_side", "overlay", "frames_out")


def read_manifest(path) -> list[dict]:
    """Rows ``{video, masks, output[, side_by_side, overlay, frames_out]}`` of a CSV (header row) or
    JSON (a list of objects, or ``{"jobs": [...]}``) manifest; relative paths are taken relative to
    the manifest's folder."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
            rows = data.get("jobs") if isinstance(data, dict) else data
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f'{p}: a JSON manifest must be a list of objects (or {{"jobs": [...]}})')
        else:
            with open(p, newline="") as f:
                rows = [dict(r) for r in csv.DictReader(f)]
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: cannot parse the manifest ({err})") from None
    if not rows:
        raise ValueError(f"{p}: the manifest has no rows")
    out = []
    for i, r in enumerate(rows, start=1):
        r = {
            str(k).strip().lower().replace("-", "_"): (str(v).strip() if v is not None else "")
            for k, v in r.items()
            if k is not None
        }
        extra = sorted(set(r) - set(MANIFEST_COLUMNS))
        if extra:
            raise ValueError(f"{p}: row {i}: unknown column {extra[0]!r} (columns: {', '.join(MANIFEST_COLUMNS)})")
        for col in ("video", "output"):
            if not r.get(col):
                raise ValueError(f"{p}: row {i}: the {col!r} column is empty or missing")
        out.append(
            {
                k: (str(p.parent / v) if v and not os.path.isabs(v) else v) or None
                for k, v in ((c, r.get(c, "")) for c in MANIFEST_COLUMNS)
            }
        )
    outs = [pathlib.Path(r["output"]).resolve() for r in out]
    if len(set(outs)) != len(outs):
        raise ValueError(f"{p}: two rows write the same output")
    return out


def is_frame_folder(path) -> bool:
    """A folder holding frame images (one clip), as opposed to a folder of clips."""
    from peanut_jax.data.video_io import FRAME_EXTENSIONS

    path = pathlib.Path(path)
    return path.is_dir() and any(p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS for p in path.iterdir())


def folder_rows(input_dir, masks_dir, output_dir, needs_masks: bool) -> list[dict]:
    """Rows for every video / frame folder of ``input_dir``: the output has the input's name under
    ``output_dir`` (a video stays a video, a frame folder a lossless frame folder), the masks are
    ``masks_dir/<name>`` (``<name>``: the video's file stem or the folder's name)."""
    from peanut_jax.data.video_io import VIDEO_EXTENSIONS

    input_dir, output_dir = pathlib.Path(input_dir), pathlib.Path(output_dir)
    if output_dir.suffix.lower() in VIDEO_EXTENSIONS or output_dir.is_file():
        raise ValueError(f"--output {output_dir}: batch mode (--input is a folder of clips) writes a folder")
    if needs_masks and (masks_dir is None or not pathlib.Path(masks_dir).is_dir()):
        raise FileNotFoundError(f"--masks {masks_dir}: batch mode needs a folder of mask folders")
    rows = []
    for p in sorted(input_dir.iterdir(), key=lambda q: q.name):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            name = p.stem
        elif is_frame_folder(p):
            name = p.name
        else:
            continue
        masks = None
        if masks_dir is not None:
            masks = pathlib.Path(masks_dir) / name
            if not masks.exists():
                raise FileNotFoundError(f"--masks {masks_dir}: no mask folder {name!r} for {p.name}")
        rows.append(
            {
                "name": name,
                "video": str(p),
                "masks": None if masks is None else str(masks),
                "output": str(output_dir / p.name),
            }
        )
    if not rows:
        raise ValueError(f"--input {input_dir}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders")
    return rows


def check_rows(needs_masks: bool, rows: list[dict], overwrite: bool, where=None) -> None:
    """Inputs exist and every output location is usable, for every row, before anything runs."""
    for i, r in enumerate(rows, start=1):
        try:
            if not pathlib.Path(r["video"]).exists():
                raise FileNotFoundError(f"video not found: {r['video']}")
            if needs_masks and not r.get("masks"):
                raise ValueError("the 'masks' column is empty (the erase stage needs masks)")
            if r.get("masks") and not pathlib.Path(r["masks"]).exists():
                raise FileNotFoundError(f"mask path not found: {r['masks']}")
            for col in ("output", "side_by_side", "overlay", "frames_out"):
                if r.get(col):
                    check_output(
                        r[col],
                        overwrite,
                        col if where else "--output",
                        video_only=col in ("side_by_side", "overlay"),
                        inputs=(pathlib.Path(r["video"]),),
                    )
        except (ValueError, OSError) as err:
            raise type(err)(f"{where}: row {i}: {err}" if where else str(err)) from None


def run_rows(
    chain: Chain,
    rows: list[dict],
    *,
    overwrite: bool = False,
    progress: bool = True,
    fps: float | None = None,
    resize_masks: bool = False,
    keep_going: bool = False,
    where=None,
    copy_audio: bool = True,
    log=print,
) -> list[RunSummary]:
    """Run every row with one loaded chain (rows checked first, see :func:`check_rows`).

    A failing row stops the batch (rows done stay written), or with ``keep_going`` is reported on
    stderr and the others still run; a ValueError at the end names the failed rows."""
    check_rows(chain.needs_masks, rows, overwrite, where)
    results, failed = [], []
    for i, r in enumerate(rows, start=1):
        try:
            src = open_source(r["video"], fps=fps)
            masks = FolderMasks(r["masks"], resize=resize_masks) if r.get("masks") else None
            s = chain.run(
                src,
                r["output"],
                masks if chain.needs_masks or r.get("overlay") else None,
                frames_out=r.get("frames_out"),
                side_by_side=r.get("side_by_side"),
                overlay=r.get("overlay"),
                overwrite=overwrite,
                progress=progress,
                copy_audio=copy_audio,
            )
        except (ValueError, OSError) as err:
            if not keep_going:
                raise type(err)(f"{where}: row {i} ({r['video']}): {err}" if where else str(err)) from None
            msg = str(err).strip().splitlines()
            print(f"error: {r.get('name', r['video'])}: {msg[0] if msg else type(err).__name__}", file=sys.stderr)
            failed.append(r.get("name", r["video"]))
            continue
        results.append(s)
        if log:
            log(f"[{i}/{len(rows)}] " + s.format())
    if failed:
        raise ValueError(f"{len(failed)} of {len(rows)} videos failed: {', '.join(failed)}")
    return results


def run_manifest(
    chain: Chain,
    manifest,
    *,
    overwrite: bool = False,
    progress: bool = True,
    fps: float | None = None,
    resize_masks: bool = False,
    log=print,
) -> list[RunSummary]:
    """Run every row of a manifest with one loaded chain; a failing row stops the batch."""
    return run_rows(
        chain,
        read_manifest(manifest),
        overwrite=overwrite,
        progress=progress,
        fps=fps,
        resize_masks=resize_masks,
        where=manifest,
        log=log,
    )
