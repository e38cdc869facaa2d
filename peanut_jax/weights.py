"""``python -m peanut_jax.weights list|fetch|import|info``: alias of ``python -m peanut_jax.checkpoints``
(the weight registry lives in :mod:`peanut_jax.checkpoints`)."""
import sys

from peanut_jax.checkpoints.cli import main
from peanut_jax.checkpoints.download import fetch, import_file, resolve_checkpoint  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.download import sha256_file, verify_file  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.entry import ChecksumError, DownloadError, WeightEntry  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.entry import ManualDownloadError, OfflineError  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.export import module_kwargs as _module_kwargs  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.load import load  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import CACHE_VERSION, DEMO_WEIGHTS, home, is_offline  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import converted_dir, download_path, entries, get  # noqa: F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import names, register, unregister  # noqa: F401  # SHIM: moved (issue 12)

if __name__ == "__main__":
    sys.exit(main())
