"""Build a :class:`~peanut_jax.pipeline.chain.Chain` from stage names and checkpoint specs.

The one place that knows which Stage class serves which stage name and which model family its
weights must be, so the commands, the demo and the Python API assemble chains the same way.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from peanut_jax.checkpoints.families import STAGE_DEFAULT, STAGE_FAMILY
from peanut_jax.pipeline.chain import STAGE_ORDER, Chain, Stage
from peanut_jax.pipeline.outputs import DEFAULT_QUEUE

__all__ = ["DEFAULT_CHECKPOINTS", "MODEL_FAMILY", "parse_stages", "load_stage_model", "make_stage", "build_chain"]

DEFAULT_CHECKPOINTS = STAGE_DEFAULT  # stage -> default registry name
MODEL_FAMILY = STAGE_FAMILY  # stage -> the model family its weights must be


def parse_stages(
    spec: str | Sequence[str] | None, upscale: int | None = None, interpolate: int | None = None
) -> list[str]:
    """Stage names from ``--stages`` (default: erase, plus upscale/interpolate when their factor is given)."""
    if spec is None or spec == "":
        names = ["erase"] + (["upscale"] if upscale else []) + (["interpolate"] if interpolate else [])
    else:
        names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in names if s not in STAGE_ORDER]
    if bad:
        raise ValueError(f"--stages: unknown stage {bad[0]!r}; choose from {', '.join(STAGE_ORDER)}")
    if not names:
        raise ValueError("--stages: no stage given")
    if len(set(names)) != len(names):
        raise ValueError(f"--stages: a stage is listed twice ({','.join(names)})")
    return sorted(names, key=STAGE_ORDER.index)


def load_stage_model(stage: str, spec, progress: bool = True, flag: str | None = None, dtype: str | None = None):
    """(module, variables, label) for a stage's checkpoint spec (registry name, file or folder),
    through the one loading door :func:`peanut_jax.checkpoints.load`; errors name ``flag``
    (default ``--checkpoint-<stage>``)."""
    from peanut_jax.checkpoints import load
    from peanut_jax.checkpoints.load import resolve

    flag = flag or f"--checkpoint-{stage}"
    module, variables = load(spec, MODEL_FAMILY[stage], flag=flag, progress=progress, dtype=dtype)
    path = pathlib.Path(resolve(spec, MODEL_FAMILY[stage], flag, progress=False))
    return module, variables, f"{spec}" if str(spec) == str(path) else f"{spec} ({path})"


def make_stage(name: str, module, variables, label: str = "", **options) -> Stage:
    """The Stage object of ``name`` around a loaded model."""
    if name == "erase":
        from peanut_jax.pipeline.erase import EraseStage

        return EraseStage(module, variables, label, **options)
    if name == "upscale":
        from peanut_jax.pipeline.upscale import UpscaleStage

        return UpscaleStage(module, variables, label, **options)
    if name == "interpolate":
        from peanut_jax.pipeline.interpolate import InterpolateStage

        return InterpolateStage(module, variables, label, **options)
    raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGE_ORDER)}")


def build_chain(
    stages: Sequence[str] = ("erase",),
    checkpoints: dict | None = None,
    *,
    upscale: int | None = None,
    interpolate: int | None = None,
    models: dict | None = None,
    erase_options: dict | None = None,
    upscale_options: dict | None = None,
    interpolate_options: dict | None = None,
    progress: bool = True,
    queue_size: int = DEFAULT_QUEUE,
) -> Chain:
    """Load the models of ``stages`` and return a :class:`Chain`.

    ``checkpoints``: ``{stage: spec}`` (registry name, official file, exported/orbax folder;
    default :data:`DEFAULT_CHECKPOINTS`).  ``models``: ``{stage: (module, variables[, label])}``
    already in memory (tests, the demo) instead of checkpoints.
    """
    checkpoints, models = dict(checkpoints or {}), dict(models or {})
    options = {
        "erase": dict(erase_options or {}),
        "upscale": dict(scale=upscale, **(upscale_options or {})),
        "interpolate": dict(multi=interpolate or 2, **(interpolate_options or {})),
    }
    built: list[Stage] = []
    for name in parse_stages(list(stages), upscale, interpolate):
        if name in models:
            from peanut_jax.checkpoints.export import hashable

            module, variables, *label = models[name]
            module = hashable(module)
            label = label[0] if label else type(module).__name__
        else:
            module, variables, label = load_stage_model(
                name, checkpoints.get(name) or DEFAULT_CHECKPOINTS[name], progress=progress
            )
        built.append(make_stage(name, module, variables, label, **options[name]))
    return Chain(built, queue_size=queue_size)
