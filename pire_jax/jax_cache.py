"""JAX's persistent compilation cache, shared by every pire_jax run on a machine.

Each new input shape of a ResNet-101 costs seconds of XLA compilation, and retrieval
datasets have many image shapes. With the cache on, a later run (or another
process) reuses the compiled programs from disk.
"""

import os

import jax
from absl import logging

CACHE_DIR_ENV_VAR = "PIRE_JAX_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "pire_jax", "jax")

# Programs that compile faster than this are not written to disk (JAX's default is 1 s).
MIN_COMPILE_SECONDS_TO_CACHE = 1.0


def enable_persistent_compilation_cache(cache_dir: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache and return its folder.

    Args:
      cache_dir: folder for the cache. When None, the environment variable
        PIRE_JAX_CACHE_DIR is used, and when that is unset, ~/.cache/pire_jax/jax.

    Returns:
      The absolute cache folder, created if missing.
    """
    directory = cache_dir or os.environ.get(CACHE_DIR_ENV_VAR) or DEFAULT_CACHE_DIR
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)

    if jax.config.jax_compilation_cache_dir != directory:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS_TO_CACHE)
        logging.info("JAX persistent compilation cache: %s.", directory)
    return directory
