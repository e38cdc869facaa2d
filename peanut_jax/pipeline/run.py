"""Moved (issue 12): the chain is :mod:`peanut_jax.pipeline.chain` (+ ``sources``, ``outputs``,
``telemetry``, ``build``), the stages live in their stage modules, batch mode and the command line
in :mod:`peanut_jax.cli`.  This module only re-exports the old names for one release."""
from peanut_jax.cli.manifest import MANIFEST_COLUMNS, read_manifest, run_manifest  # noqa: F401  # SHIM
from peanut_jax.data.prefetch import Prefetcher  # noqa: F401  # SHIM
from peanut_jax.pipeline import erase as _erase  # noqa: F401  # SHIM: benchmarks/pipeline.py reads R._erase.EraseConfig
from peanut_jax.pipeline.build import (  # noqa: F401  # SHIM
                                       DEFAULT_CHECKPOINTS,
                                       MODEL_FAMILY,
                                       build_chain,
                                       load_stage_model,
                                       parse_stages,
)
from peanut_jax.pipeline.chain import STAGE_ORDER, Chain, Stage  # noqa: F401  # SHIM
from peanut_jax.pipeline.common import enable_compilation_cache  # noqa: F401  # SHIM
from peanut_jax.pipeline.erase import EraseStage, StreamClip  # noqa: F401  # SHIM
from peanut_jax.pipeline.interpolate import InterpolateStage  # noqa: F401  # SHIM
from peanut_jax.pipeline.outputs import (  # noqa: F401  # SHIM
                                       DEFAULT_QUEUE,
                                       WriterThread,
                                       check_output,
                                       has_audio,
                                       mux_audio,
                                       side_by_side_frame,
                                       write_json,
)
from peanut_jax.pipeline.sources import (  # noqa: F401  # SHIM
                                       ArrayMasks,
                                       ArraySource,
                                       FolderMasks,
                                       Frame,
                                       MaskSource,
                                       StreamInfo,
                                       note_masks,
                                       open_source,
)
from peanut_jax.pipeline.telemetry import MemoryMonitor, RunSummary, backend_compiles  # noqa: F401  # SHIM
from peanut_jax.pipeline.upscale import UpscaleStage  # noqa: F401  # SHIM
