"""Moved (issue 12): the chain is :mod:`peanut_jax.pipeline.chain` (+ ``sources``, ``outputs``,
``telemetry``, ``build``), the stages live in their stage modules, batch mode and the command line
in :mod:`peanut_jax.cli`.  This module only re-exports the old names for one release."""
from peanut_jax.cli.manifest import MANIFEST_COLUMNS, read_manifest, run_manifest  # noqa: F401  # SHIM
from peanut_jax.data.prefetch import Prefetcher  # noqa: F401  # SHIM
from peanut_jax.pipeline.build import (DEFAULT_CHECKPOINTS, MODEL_FAMILY, build_chain, load_stage_model,  # noqa: F401  # SHIM
                                       parse_stages)
from peanut_jax.pipeline.chain import STAGE_ORDER, Chain, Stage  # noqa: F401  # SHIM
from peanut_jax.pipeline.common import enable_compilation_cache  # noqa: F401  # SHIM
from peanut_jax.pipeline.erase import EraseStage, StreamClip  # noqa: F401  # SHIM
from peanut_jax.pipeline.interpolate import InterpolateStage  # noqa: F401  # SHIM
from peanut_jax.pipeline.outputs import (DEFAULT_QUEUE, WriterThread, check_output, has_audio, mux_audio,  # noqa: F401  # SHIM
                                         side_by_side_frame, write_json)
from peanut_jax.pipeline.sources import (ArrayMasks, ArraySource, FolderMasks, Frame, MaskSource, StreamInfo,  # noqa: F401  # SHIM
                                         note_masks, open_source)
from peanut_jax.pipeline.telemetry import MemoryMonitor, RunSummary, backend_compiles  # noqa: F401  # SHIM
from peanut_jax.pipeline.upscale import UpscaleStage  # noqa: F401  # SHIM
