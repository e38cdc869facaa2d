"""``python -m peanut_jax.weights list|fetch|import|info``: alias of ``python -m peanut_jax.checkpoints``
(the weight registry now lives in :mod:`peanut_jax.checkpoints`)."""
import sys

from peanut_jax.checkpoints.cli import main

from peanut_jax.checkpoints.download import fetch, import_file, resolve_checkpoint, sha256_file, verify_file  # noqa: E402,F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.entry import ChecksumError, DownloadError, ManualDownloadError, OfflineError, WeightEntry  # noqa: E402,F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.export import module_kwargs as _module_kwargs  # noqa: E402,F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.load import load  # noqa: E402,F401  # SHIM: moved (issue 12)
from peanut_jax.checkpoints.registry import CACHE_VERSION, DEMO_WEIGHTS, converted_dir, download_path, entries, get, home, is_offline, names, register, unregister  # noqa: E402,F401  # SHIM: moved (issue 12)

if __name__ == "__main__":
    sys.exit(main())
