"""Optical flow of a video with SPyNet: colour-coded flow video out (``infer.py flow``, a chain of one
:class:`FlowStage`).

Pairs (t, t+1) are processed in fixed-size batches by one jitted function (the last batch is
padded, never recompiled); frames are decoded lazily and flow images are written as soon as they
are ready, so memory does not grow with the clip length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.pipeline.chain import Frame, Stage

DEMO_WEIGHTS = ("spynet_demo",)


def _batched_pairs(frames: Iterable[np.ndarray], batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    prev = None
    refs, supps = [], []
    for f in frames:
        if prev is not None:
            refs.append(prev)
            supps.append(f)
            if len(refs) == batch:
                yield np.stack(refs), np.stack(supps), batch
                refs, supps = [], []
        prev = f
    if refs:
        n = len(refs)
        refs += [refs[-1]] * (batch - n)
        supps += [supps[-1]] * (batch - n)
        yield np.stack(refs), np.stack(supps), n


def estimate_flows(module, variables, frames: Iterable[np.ndarray], batch: int = 4) -> Iterator[np.ndarray]:
    """Yield the flow (H, W, 2) from frame t to t+1 for consecutive frames (uint8 or float [0,1])."""

    @jax.jit
    def run(v, ref, supp):
        return module.apply(v, ref, supp)

    def to_float(a):
        return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)

    for ref, supp, n in _batched_pairs(frames, batch):
        flows = np.asarray(run(variables, jnp.asarray(to_float(ref)), jnp.asarray(to_float(supp))))
        yield from flows[:n]


def demo_clip(num_frames: int = 16, height: int = 96, width: int = 128, seed: int = 0):
    """The bundled default input: a procedural clip with exact ground-truth flow (the demo weights
    were trained on 48x64 synthetic crops, so the clip keeps motions of a few pixels)."""
    from peanut_jax.data.synthetic import generate_clip

    return generate_clip(seed, num_frames=num_frames, height=height, width=width, num_objects=3)


class FlowStage(Stage):
    """SPyNet flow of every consecutive pair, emitted as colour-coded images (``side_by_side``: next
    to the first frame of the pair).  ``reference``: exact flows (T-1, H, W, 2) (the demo clip's):
    a third panel, and the end-point errors are collected in ``errors``."""

    name = "flow"

    def __init__(
        self,
        module,
        variables,
        weights: str = "",
        batch: int = 4,
        max_flow: float | None = None,
        side_by_side: bool = True,
        reference=None,
    ):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.module, self.variables, self.weights = module, variables, weights
        self.batch, self.max_flow, self.side_by_side, self.reference = batch, max_flow, side_by_side, reference
        self.errors: list[float] = []

    def check(self, info):
        if info.num_frames < 2:
            raise ValueError(f"optical flow needs at least 2 frames, the video has {info.num_frames}")

    def output_info(self, info):
        panels = 1 + (2 if self.reference is not None else 1) * self.side_by_side
        return info.replace(num_frames=info.num_frames - 1, width=info.width * panels)

    def __call__(self, frames, info):
        from peanut_jax.data.flow_viz import flow_to_color
        from peanut_jax.metrics.flow import epe

        kept: list = []  # the first frame of each pair, for the side-by-side view, without decoding twice

        def tee(it):
            for fr in it:
                kept.append(fr.image)
                yield fr.image

        for i, flow in enumerate(estimate_flows(self.module, self.variables, tee(frames), self.batch)):
            vis = flow_to_color(flow, max_flow=self.max_flow)
            if self.side_by_side:
                panels = [kept[i], vis]
                if self.reference is not None:
                    panels.append(flow_to_color(self.reference[i], max_flow=self.max_flow))
                vis = np.concatenate(panels, axis=1)
            if self.reference is not None:
                self.errors.append(float(epe(flow, self.reference[i])))
            kept[i] = None  # release the frame
            yield Frame(vis, None, i)


def run_flow(
    input_path,
    output,
    checkpoint=None,
    batch: int = 4,
    overwrite: bool = False,
    max_flow: float | None = None,
    side_by_side: bool = True,
    demo: bool = False,
    progress: bool = True,
) -> dict:
    """The ``infer.py flow`` job (a one-stage chain).  Returns a summary dict (pairs, seconds, EPE for
    the demo)."""
    from peanut_jax.checkpoints import load
    from peanut_jax.metrics.flow import epe
    from peanut_jax.pipeline.chain import Chain
    from peanut_jax.pipeline.common import bundled_asset
    from peanut_jax.pipeline.outputs import check_output
    from peanut_jax.pipeline.sources import ArraySource, open_source

    check_output(output, overwrite, "--output", inputs=() if demo else (input_path,))  # before loading anything
    reference = None
    if demo:
        clip = demo_clip()
        source = ArraySource(
            (np.clip(clip.frames * 255.0 + 0.5, 0, 255)).astype(np.uint8), fps=12.0, name="synthetic flow demo clip"
        )
        reference = clip.flow_forward
        checkpoint = checkpoint or bundled_asset(*DEMO_WEIGHTS)
    else:
        source = open_source(input_path)
        if len(source) < 2:
            raise ValueError(f"{input_path}: optical flow needs at least 2 frames, the video has {len(source)}")
        if checkpoint is None:
            raise ValueError(
                "--checkpoint is required (a registry name such as spynet or the bundled spynet_demo, an "
                "official SPyNet .pth, or an exported/orbax directory)"
            )
    module, variables = load(checkpoint, "spynet", flag="--checkpoint", progress=progress)
    stage = FlowStage(module, variables, str(checkpoint), batch, max_flow, side_by_side, reference)
    s = Chain([stage]).run(source, output, overwrite=overwrite, progress=progress, copy_audio=False)
    summary = {"pairs": s.frames_out, "seconds": s.seconds, "output": str(output), "checkpoint": str(checkpoint)}
    if stage.errors:
        zero = float(np.mean([float(epe(np.zeros_like(g), g)) for g in reference]))
        summary.update(epe=float(np.mean(stage.errors)), epe_zero_flow=zero)
    return summary
