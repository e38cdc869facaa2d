"""The argument parser of ``infer.py``: every command, one flag vocabulary.

A flag has one name, one meaning and one default on every command that offers it (the table in
``docs/cli.md``).  Old spellings and the spellings users of the official projects type (RIFE
``--exp``/``--fps``/``--scale``, E2FGVI ``--ckpt``/``--set_size``/``--width``/``--height``) are hidden
aliases: they set the same destination and are translated by :func:`normalize`.
"""

from __future__ import annotations

import argparse

__all__ = ["COMMANDS", "build_parser", "normalize"]

COMMANDS = ("run", "mask", "erase", "upscale", "interpolate", "flow")
CHAIN_COMMANDS = ("run", "erase", "upscale", "interpolate")  # the commands that run a Chain
HIDDEN = argparse.SUPPRESS


def _hidden(p, *names, **kw):
    """An old or official spelling: same destination, no help line, no default of its own."""
    p.add_argument(*names, help=HIDDEN, default=HIDDEN, **kw)


def _no_compile_cache(g) -> None:
    g.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs between runs (default: cached in $PEANUT_HOME/xla_cache; "
        "same as PEANUT_XLA_CACHE=0)",
    )


def _io(p, command: str) -> None:
    g = p.add_argument_group("input / output")
    needs_masks = command in ("run", "erase")
    g.add_argument(
        "--input",
        help="video file or frame folder; a folder of them runs each (batch)"
        if command != "flow"
        else "video file or frame folder (omit with --demo)",
    )
    if needs_masks:
        g.add_argument(
            "--masks",
            help="mask folder (one image per frame, sorted by name; any non-zero pixel is the "
            "object) or one mask image for all frames; batch: a folder of mask folders",
        )
    g.add_argument("--output", help="output video (.mp4, ...) or a folder name for PNG frames; batch: a folder")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    _no_compile_cache(g)
    if command == "flow":
        return
    g.add_argument(
        "--in-fps", type=float, default=None, help="input frame rate (default: the container's, 25 for frame folders)"
    )
    if command != "interpolate":
        _hidden(g, "--fps", dest="in_fps", type=float)  # old spelling of --in-fps (interpolate: RIFE's --fps)
    g.add_argument("--manifest", help="batch mode: CSV/JSON of video, masks, output rows")
    g.add_argument("--frames-out", help="also write the final frames as PNGs into this folder")
    g.add_argument("--side-by-side", help="also write a before/after video (input | result)")
    if needs_masks:
        g.add_argument("--overlay", help="also write the input with the masks tinted (mask check)")
    g.add_argument("--no-audio", action="store_true", help="do not copy the source's audio track")
    g.add_argument("--summary-json", help="write the run summary to this JSON file")
    g.add_argument("--queue", type=int, default=8, help="frames buffered by the reader/writer threads")


def _models(p, command: str) -> None:
    g = p.add_argument_group("weights")
    if command == "run":
        from peanut_jax.pipeline.build import DEFAULT_CHECKPOINTS

        for stage in ("erase", "upscale", "interpolate"):
            g.add_argument(
                f"--checkpoint-{stage}",
                default=None,
                metavar="SPEC",
                help=f"{stage} weights: registry name (default {DEFAULT_CHECKPOINTS[stage]}), "
                "official checkpoint file, or exported/orbax folder",
            )
    else:
        what = {
            "erase": "e2fgvi, e2fgvi_hq or an official E2FGVI-CVPR22.pth / E2FGVI-HQ-CVPR22.pth",
            "upscale": "basicvsr_pp, basicvsr_pp_reds4, ... or an official BasicVSR++ .pth",
            "interpolate": "rife, rife_hdv3 or an official flownet.pkl",
            "flow": "spynet or an official SPyNet .pth",
        }[command]
        from peanut_jax.pipeline.build import DEFAULT_CHECKPOINTS

        default = DEFAULT_CHECKPOINTS.get(command)
        g.add_argument(
            "--checkpoint",
            default=None,
            metavar="SPEC",
            help=f"registry name ({what}), or an exported/orbax folder" + (f" (default {default})" if default else ""),
        )
        if command == "erase":
            _hidden(g, "--ckpt", dest="checkpoint")  # E2FGVI test.py
            g.add_argument(
                "--model",
                choices=("e2fgvi", "e2fgvi_hq"),
                default=None,
                help="refuse weights of the other E2FGVI model (default: detected from the checkpoint)",
            )
    if command != "flow":
        g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")


def _erase(p, command: str) -> None:
    from peanut_jax.pipeline.erase_windows import DEFAULT_STREAM_REFS, MODES

    g = p.add_argument_group("erase (E2FGVI)")
    g.add_argument(
        "--erase-mode",
        choices=MODES,
        default="streaming",
        help="'streaming' (bounded reference set, flat memory; default) or 'official' (test.py's "
        "reference set: every --ref-length-th frame of the whole clip, held in memory)",
    )
    _hidden(g, "--mode", dest="erase_mode", choices=MODES)
    g.add_argument("--neighbor-stride", type=int, default=5, help="local window step (window = 2*stride+1 frames)")
    _hidden(g, "--neighbor_stride", dest="neighbor_stride", type=int)
    g.add_argument("--ref-length", type=int, default=10, help="reference frame grid step")
    g.add_argument(
        "--num-ref",
        type=int,
        default=-1,
        help="-1: grid frames (all: official / nearest --stream-refs: streaming); k>0: official window rule",
    )
    _hidden(g, "--num_ref", dest="num_ref", type=int)
    g.add_argument(
        "--stream-refs",
        type=int,
        default=DEFAULT_STREAM_REFS,
        help="streaming: reference frames per window (nearest grid frames; -1 = all)",
    )
    g.add_argument(
        "--erase-size",
        default=None,
        metavar="HxW",
        help="e2fgvi_hq: processing size (default: the native size; e2fgvi always runs at 240x432)",
    )
    _hidden(g, "--size", dest="erase_size")
    _hidden(g, "--set_size", dest="set_size", action="store_true")  # E2FGVI test.py: --set_size --width --height
    _hidden(g, "--width", dest="width", type=int)
    _hidden(g, "--height", dest="height", type=int)
    g.add_argument("--resize-masks", action="store_true", help="resize masks of another size (nearest neighbour)")


def _upscale(p, command: str) -> None:
    from peanut_jax.pipeline.upscale import DEFAULT_CHUNK, DEFAULT_OVERLAP

    g = p.add_argument_group("upscale (BasicVSR++)")
    g.add_argument(
        "--upscale",
        type=int,
        default=None,
        metavar="S",
        help="super-resolution factor (refused if the checkpoint's differs)"
        + ("; adds the upscale stage" if command == "run" else ""),
    )
    if command == "upscale":
        _hidden(g, "--scale", dest="upscale", type=int)  # old spelling on this command
    g.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help="frames per streaming chunk (0 = whole clip in one call, the official behaviour)",
    )
    g.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="context frames on each side of a chunk")
    g.add_argument("--blend", type=int, default=0, help="cross-fade width at chunk borders (even, <= 2*overlap)")
    g.add_argument(
        "--tile",
        type=int,
        nargs="+",
        default=None,
        metavar="PX",
        help="spatial tile size in input pixels (one value or H W) for large frames",
    )
    g.add_argument("--tile-overlap", type=int, default=16, help="context pixels on each side of a tile")
    g.add_argument("--tile-blend", type=int, default=0, help="feathering width at tile borders (even)")


def _interpolate(p, command: str) -> None:
    from peanut_jax.pipeline.interpolate import SCALES

    g = p.add_argument_group("interpolate (RIFE)")
    g.add_argument(
        "--interpolate",
        type=int,
        default=None,
        metavar="M",
        help="frame-rate factor (a power of two for models without timestep input)"
        + ("; adds the interpolate stage" if command == "run" else "; default 2"),
    )
    _hidden(g, "--multi", dest="interpolate", type=int)  # old spelling, and RIFE's
    _hidden(g, "--exp", dest="exp", type=int)  # RIFE: factor 2**exp
    if command == "interpolate":
        g.add_argument("--target-fps", type=float, default=None, help="target frame rate instead of --interpolate")
        _hidden(g, "--fps", dest="target_fps", type=float)  # RIFE's --fps
    g.add_argument(
        "--rife-scale",
        type=float,
        default=1.0,
        choices=SCALES,
        help="RIFE resolution scale: 0.5 for 4K input, 1.0 otherwise",
    )
    if command == "interpolate":
        _hidden(g, "--scale", dest="rife_scale", type=float, choices=SCALES)  # RIFE's --scale
    g.add_argument("--rife-batch", type=int, default=4, help="frame pairs per jitted call")
    if command == "interpolate":
        _hidden(g, "--batch", dest="rife_batch", type=int)  # old spelling on this command
    g.add_argument("--tta", action="store_true", help="flip test-time augmentation (average with the flipped pair)")
    g.add_argument(
        "--no-scene-detect",
        action="store_true",
        help="interpolate across scene cuts too (default: cuts are repeated, not morphed)",
    )
    g.add_argument(
        "--on-duplicate",
        choices=("copy", "interpolate"),
        default="copy",
        help="near-duplicate pairs: copy the first frame (default) or interpolate",
    )


def _mask(p) -> None:
    from peanut_jax.pipeline import mask

    g = p.add_argument_group("input / output")
    g.add_argument("--input", help="video file or frame folder")
    g.add_argument("--output", help="folder for the masks: one PNG per frame (00000.png, ...)")
    g.add_argument(
        "--in-fps", type=float, default=None, help="frame rate of the --overlay video (default: the input's)"
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    _no_compile_cache(g)
    mask.add_arguments(p, checkpoint_flag="--checkpoint", outputs=True)
    from peanut_jax.pipeline import text_masks

    text_masks.add_arguments(p, checkpoint_flag=None)  # --checkpoint: SAM 2 weights, or SAMWISE with --prompt
    p.set_defaults(sam2_checkpoint=None)  # the default depends on the prompt kind (mask_command)
    for action in p._actions:
        if action.dest == "sam2_checkpoint":
            action.help = (
                f"SAM 2 weights (default {mask.DEFAULT_CHECKPOINT}), or with --prompt SAMWISE weights "
                f"(default {text_masks.DEFAULT_CHECKPOINT}): registry name, official file or converted folder"
            )


def _flow(p) -> None:
    g = p.add_argument_group("flow (SPyNet)")
    g.add_argument(
        "--demo",
        action="store_true",
        help="run on the bundled procedural clip with the bundled demo weights and report EPE",
    )
    g.add_argument("--flow-batch", type=int, default=4, help="frame pairs per jitted call")
    _hidden(g, "--batch", dest="flow_batch", type=int)
    g.add_argument("--max-flow", type=float, default=None, help="flow magnitude mapped to full saturation")
    g.add_argument("--flow-only", action="store_true", help="write only the flow image (no side-by-side)")


HELP = {
    "run": (
        "the end-to-end chain erase -> upscale -> interpolate (default command)",
        "Run any sub-chain of erase (E2FGVI) -> upscale (BasicVSR++) -> interpolate (RIFE), streaming.",
    ),
    "mask": (
        "masks from clicks / boxes / a mask (SAM 2) or a sentence (SAMWISE): per-frame mask PNGs",
        "Video object masks: SAM 2 from --click / --box / --mask-prompt prompts on chosen frames, "
        "or SAMWISE from --prompt sentences.",
    ),
    "erase": (
        "remove masked objects from a video with E2FGVI / E2FGVI-HQ",
        "Video object removal with E2FGVI(-HQ): the chain with the erase stage only.",
    ),
    "upscale": (
        "video super-resolution / restoration with BasicVSR++",
        "BasicVSR++ in streaming chunks: the chain with the upscale stage only.",
    ),
    "interpolate": (
        "frame interpolation with RIFE (2x/4x/8x or a target fps)",
        "RIFE frame interpolation: the chain with the interpolate stage only.",
    ),
    "flow": (
        "estimate optical flow with SPyNet and write a colour-coded video",
        "Optical flow of consecutive frames with SPyNet, written as a colour-coded video.",
    ),
}


def build_parser(prog: str = "infer.py", description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        short, long = HELP[command]
        p = sub.add_parser(command, help=short, description=long)
        if command == "mask":
            _mask(p)
            p.set_defaults(command=command)
            continue
        _io(p, command)
        _models(p, command)
        if command in ("run", "erase"):
            _erase(p, command)
            from peanut_jax.pipeline import mask

            mask.add_arguments(p, checkpoint_flag="--checkpoint-mask", outputs=False)  # masks from prompts
            from peanut_jax.pipeline import text_masks

            text_masks.add_arguments(p, checkpoint_flag="--checkpoint-text")  # masks from sentences
        if command in ("run", "upscale"):
            _upscale(p, command)
        if command in ("run", "interpolate"):
            _interpolate(p, command)
        if command == "run":
            g = p.add_argument_group("chain")
            g.add_argument(
                "--stages",
                default=None,
                help="comma-separated sub-chain of erase,upscale,interpolate (default: erase, plus "
                "upscale/interpolate when --upscale/--interpolate is given)",
            )
            g.add_argument(
                "--demo",
                action="store_true",
                help="run text -> mask -> erase -> upscale -> interpolate on the bundled synthetic clip with "
                "the bundled (or cached official) weights; --prompt names the object (default: one of the "
                "clip's sentences); prints the masks' J&F, PSNR/SSIM of the erased region and Ewarp",
            )
            g.add_argument(
                "--demo-weights",
                choices=("auto", "bundled"),
                default="auto",
                help="demo: 'auto' uses official weights from the $PEANUT_HOME cache when present",
            )
        if command == "flow":
            _flow(p)
        p.set_defaults(command=command)
    return parser


def normalize(args: argparse.Namespace) -> argparse.Namespace:
    """Translate the official spellings into the vocabulary (``--exp E`` -> ``--interpolate 2**E``,
    ``--set_size --width W --height H`` -> ``--erase-size HxW``) and refuse contradictions."""
    exp = getattr(args, "exp", None)
    if exp is not None:
        if getattr(args, "interpolate", None) is not None:
            raise ValueError("give either --interpolate (--multi) or --exp, not both")
        if exp < 0:
            raise ValueError(f"--exp must be >= 0, got {exp}")
        args.interpolate = 2**exp
    if getattr(args, "set_size", False) or getattr(args, "width", None) or getattr(args, "height", None):
        if not (getattr(args, "width", None) and getattr(args, "height", None)):
            raise ValueError("--set_size needs --width and --height")
        if args.erase_size is not None:
            raise ValueError("give either --erase-size or --set_size --width --height, not both")
        args.erase_size = f"{args.height}x{args.width}"
    for name in ("exp", "set_size", "width", "height"):
        if hasattr(args, name):
            delattr(args, name)
    return args
