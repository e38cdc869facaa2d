"""What each ``infer.py`` command does with its parsed flags.

``run``, ``erase``, ``upscale`` and ``interpolate`` are one function, :func:`chain_command`: a
single-stage command is the chain with one stage, so validation, I/O, progress, batch mode
(manifest or a folder of clips) and atomic output are written once.  ``flow`` writes a
visualisation rather than frames of the video, and ``run --demo`` is the bundled demo.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from peanut_jax.pipeline.chain import Chain

__all__ = ["dispatch", "chain_command", "flow_command", "mask_command"]

STAGE_OF = {"erase": "erase", "upscale": "upscale", "interpolate": "interpolate"}
ERASE_FLAGS = {"size": "--erase-size", "model": "--model e2fgvi_hq"}


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "flow":
        return flow_command(args)
    if args.command == "mask":
        return mask_command(args)
    if args.command == "run" and args.demo:
        from peanut_jax.cli import demo

        return demo.main_from_args(args)
    return chain_command(args)


def _stages(args) -> list[str]:
    from peanut_jax.pipeline.build import parse_stages

    if args.command != "run":
        return [STAGE_OF[args.command]]
    for opt in ("upscale", "interpolate"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise ValueError(f"--{opt} must be >= 1, got {v}")
    stages = parse_stages(args.stages, args.upscale, args.interpolate)
    for opt in ("upscale", "interpolate"):
        if getattr(args, opt) is not None and opt not in stages:
            raise ValueError(
                f"--{opt} {getattr(args, opt)} given but the {opt} stage is not in --stages {','.join(stages)}"
            )
    if "erase" not in stages and (args.masks or _prompts(args) or _texts(args)) and not args.overlay:
        raise ValueError("--masks given but the erase stage is not in --stages")
    return stages


def _targets(args) -> dict:
    return {k: getattr(args, k, None) for k in ("output", "frames_out", "side_by_side", "overlay")}


def _prompts(args) -> list:
    """SAM 2 prompts given on the command line (--click/--box/--mask-prompt), parsed."""
    if not hasattr(args, "click"):
        return []
    from peanut_jax.pipeline.mask import prompts_from_args

    return prompts_from_args(args)


def _texts(args) -> list[str]:
    """Text prompts (--prompt, repeatable) given on the command line."""
    return list(getattr(args, "prompt", None) or [])


def _batch_rows(args, needs_masks: bool):
    """Rows of a manifest or of a folder of clips, or None for a single clip."""
    from peanut_jax.cli.manifest import folder_rows, is_frame_folder, read_manifest

    if args.manifest:
        if _texts(args):
            raise ValueError("--prompt segments one video: not with --manifest")
        if _prompts(args):
            raise ValueError("--click/--box/--mask-prompt name frames of one video: not with --manifest")
        if args.input or args.output:
            raise ValueError("--manifest replaces --input/--output; give one or the other")
        return read_manifest(args.manifest)
    if not args.input:
        raise ValueError(
            "--input is required (or --manifest for batch mode" + (", or --demo)" if args.command == "run" else ")")
        )
    inp = pathlib.Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"--input: not found: {inp}")
    if inp.is_dir() and not is_frame_folder(inp):
        if _texts(args):
            raise ValueError("--prompt segments one video: not with a folder of clips")
        if _prompts(args):
            raise ValueError("--click/--box/--mask-prompt name frames of one video: not with a folder of clips")
        if args.output is None:
            raise ValueError("--output is required (batch mode writes one output per clip into that folder)")
        return folder_rows(inp, getattr(args, "masks", None) if needs_masks else None, args.output, needs_masks)
    return None


def _precheck(args, stages: list[str]):
    """Cheap input/output checks before the (slow) model loading: (source, masks) of a single clip."""
    from peanut_jax.pipeline.outputs import check_output
    from peanut_jax.pipeline.sources import FolderMasks, StreamInfo, note_masks, open_source

    targets = _targets(args)
    if targets["output"] is None and not any(targets.values()):
        raise ValueError("--output is required")
    prompts, texts = _prompts(args), _texts(args)
    if prompts and getattr(args, "masks", None):
        raise ValueError("give either --masks or --click/--box/--mask-prompt, not both")
    if texts and getattr(args, "masks", None):
        raise ValueError("give either --masks or --prompt, not both")
    if texts and prompts:
        raise ValueError("give either --prompt or --click/--box/--mask-prompt, not both")
    if "erase" in stages and not args.masks and not prompts and not texts:
        raise ValueError(
            "the erase stage needs --masks MASK_DIR, --prompt SENTENCE or --click/--box/--mask-prompt"
            + (" (or drop it with --stages)" if args.command == "run" else "")
        )
    for what, v in targets.items():
        if v is not None:
            check_output(
                v,
                args.overwrite,
                f"--{what.replace('_', '-')}",
                video_only=what in ("side_by_side", "overlay"),
                inputs=(pathlib.Path(args.input),),
            )
    source = open_source(args.input, fps=args.in_fps)
    if args.in_fps is not None:
        source.fps = float(args.in_fps)  # overrides the container's rate too
    masks = None
    info = StreamInfo(len(source), source.height, source.width, float(source.fps or 25.0))
    if prompts:
        from peanut_jax.pipeline.mask import PromptMasks

        masks = PromptMasks(
            prompts,
            args.sam2_checkpoint,
            video=source,
            checkpoint_flag="--checkpoint-mask",
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        masks.prepare(info)
    elif texts:
        from peanut_jax.pipeline.text_masks import TextPromptMasks

        masks = TextPromptMasks(
            texts,
            args.text_checkpoint,
            tokenizer=args.tokenizer,
            checkpoint_flag="--checkpoint-text",
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        masks.prepare(info)
    elif getattr(args, "masks", None):
        masks = FolderMasks(args.masks, resize=args.resize_masks)
        masks.prepare(info)
        if "erase" in stages:
            note_masks(masks)
    return source, masks


def _stage_options(args, name: str) -> dict:
    from peanut_jax.pipeline.erase_windows import EraseConfig, parse_size

    if name == "erase":
        config = EraseConfig(
            mode=args.erase_mode,
            neighbor_stride=args.neighbor_stride,
            ref_length=args.ref_length,
            num_ref=args.num_ref,
            stream_refs=args.stream_refs,
        )
        flag = "--erase-size"
        return dict(
            config=config,
            size=parse_size(args.erase_size, flag),
            **({"flags": ERASE_FLAGS} if args.command == "erase" else {}),
        )
    if name == "upscale":
        tile = None
        if args.tile:
            if len(args.tile) > 2:
                raise ValueError(f"--tile takes one or two sizes, got {args.tile}")
            tile = tuple(args.tile) if len(args.tile) == 2 else args.tile[0]
        return dict(
            scale=args.upscale,
            chunk=args.chunk or None,
            overlap=args.overlap,
            blend=args.blend,
            tile=tile,
            tile_overlap=args.tile_overlap,
            tile_blend=args.tile_blend,
        )
    from peanut_jax.pipeline.interpolate import CLI_NAMES

    target = getattr(args, "target_fps", None)
    if target is not None and args.interpolate is not None:
        raise ValueError("give either --interpolate or --target-fps, not both")
    if args.interpolate is not None and args.interpolate < 1:
        raise ValueError(f"--interpolate must be >= 1, got {args.interpolate}")
    return dict(
        multi=args.interpolate or 2,
        fps=target,
        batch_size=args.rife_batch,
        scale=args.rife_scale,
        tta=args.tta,
        scene_detect=not args.no_scene_detect,
        on_duplicate=args.on_duplicate,
        flags={**CLI_NAMES, "multi": "--interpolate", "fps": "--target-fps"},
    )


def _load(args, name: str, progress: bool):
    """(module, variables, label) of a stage's weights."""
    from peanut_jax.pipeline.build import DEFAULT_CHECKPOINTS, load_stage_model

    if args.command == "run":
        spec = getattr(args, f"checkpoint_{name}") or DEFAULT_CHECKPOINTS[name]
        return load_stage_model(name, spec, progress=progress, dtype=args.dtype)
    spec = args.checkpoint or DEFAULT_CHECKPOINTS[name]
    if name == "erase":
        from peanut_jax.pipeline.erase import load_eraser

        _, module, variables = load_eraser(spec, args.model, args.dtype)
        return module, variables, str(spec)
    return load_stage_model(name, spec, progress=progress, flag="--checkpoint", dtype=args.dtype)


def chain_command(args: argparse.Namespace) -> int:
    """``infer.py run|erase|upscale|interpolate``: check, load, stream, write, summarise."""
    from peanut_jax.cli.manifest import check_rows, run_rows
    from peanut_jax.pipeline.build import make_stage
    from peanut_jax.pipeline.outputs import check_output, write_json

    progress = not args.no_progress and sys.stderr.isatty()
    stages = _stages(args)
    options = {name: _stage_options(args, name) for name in stages}  # flag errors before anything is loaded
    rows = _batch_rows(args, "erase" in stages)
    source = masks = None
    if rows is None:
        source, masks = _precheck(args, stages)
    else:
        if not args.manifest and not pathlib.Path(args.output).is_dir():
            check_output(args.output, True, "--output")  # the batch folder can be created
            pathlib.Path(args.output).mkdir(parents=True)
        check_rows("erase" in stages, rows, args.overwrite, args.manifest)  # every row, before loading
    built = []
    for name in stages:
        module, variables, label = _load(args, name, progress)
        built.append(make_stage(name, module, variables, label, **options[name]))
    chain = Chain(built, queue_size=args.queue)
    if rows is not None:
        results = run_rows(
            chain,
            rows,
            overwrite=args.overwrite,
            progress=progress,
            fps=args.in_fps,
            resize_masks=getattr(args, "resize_masks", False),
            keep_going=not args.manifest,
            where=args.manifest,
            copy_audio=not args.no_audio,
        )
        summary = {"clips": [r.as_dict() for r in results]}
    else:
        s = chain.run(
            source,
            args.output,
            masks,
            frames_out=args.frames_out,
            side_by_side=args.side_by_side,
            overlay=getattr(args, "overlay", None),
            overwrite=args.overwrite,
            progress=progress,
            copy_audio=not args.no_audio,
        )
        print(s.format())
        summary = s.as_dict()
    if args.summary_json:
        write_json(args.summary_json, summary)
    return 0


def flow_command(args: argparse.Namespace) -> int:
    from peanut_jax.pipeline.flow import run_flow

    if not args.demo and not args.input:
        raise ValueError("--input is required unless --demo is given")
    if args.output is None:
        raise ValueError("--output is required")
    if args.flow_batch < 1:
        raise ValueError(f"--flow-batch must be >= 1, got {args.flow_batch}")
    s = run_flow(
        args.input,
        pathlib.Path(args.output),
        args.checkpoint,
        args.flow_batch,
        args.overwrite,
        args.max_flow,
        not args.flow_only,
        args.demo,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    line = f"wrote {s['output']}: {s['pairs']} flow frames in {s['seconds']:.1f} s (weights: {s['checkpoint']})"
    if "epe" in s:
        line += f"\nEPE vs exact flow: {s['epe']:.3f} px (zero-flow baseline {s['epe_zero_flow']:.3f} px)"
    print(line)
    return 0


def mask_command(args: argparse.Namespace) -> int:
    """``infer.py mask``: masks from SAM 2 prompts or SAMWISE sentences, one PNG per frame (union,
    or palette with --per-object); both sources go through the one writer, :func:`write_masks`."""
    from peanut_jax.pipeline.mask import DEFAULT_CHECKPOINT, prompts_from_args, run_mask, write_masks
    from peanut_jax.pipeline.telemetry import compile_label

    if not args.input:
        raise ValueError("--input is required")
    if not args.output:
        raise ValueError("--output is required (a folder for the mask PNGs)")
    prompts, texts = prompts_from_args(args), _texts(args)
    if prompts and texts:
        raise ValueError("give either --prompt or --click/--box/--mask-prompt, not both")
    if not prompts and not texts:
        raise ValueError("give at least one --prompt, --click, --box or --mask-prompt")
    progress = not args.no_progress and sys.stderr.isatty()
    outputs = dict(per_object=args.per_object, overlay=args.overlay, overwrite=args.overwrite, fps=args.in_fps)
    if texts:
        from peanut_jax.pipeline.text_masks import TextPromptMasks

        source = TextPromptMasks(
            texts, args.sam2_checkpoint, tokenizer=args.tokenizer, checkpoint_flag="--checkpoint", progress=progress
        )
        with compile_label("mask (SAMWISE)"):
            out = write_masks(args.input, args.output, source, progress=progress, **outputs)
    else:
        with compile_label("mask (SAM 2)"):
            out = run_mask(
                args.input,
                args.output,
                prompts,
                checkpoint=args.sam2_checkpoint or DEFAULT_CHECKPOINT,
                progress=progress,
                **outputs,
            )
    print(f"wrote {out}")
    return 0
