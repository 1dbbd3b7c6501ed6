"""Atomic file writes, so that an interrupted run never leaves a half-written result.

Every writer goes through a temporary file in the destination folder followed by
`os.replace`, which is atomic on POSIX and Windows when source and destination
are on the same file system. A reader therefore sees either the old file or the
complete new one.
"""

import contextlib
import json
import math
import os
import tempfile
from typing import Any, Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path that replaces `path` when the block exits cleanly.

    Args:
      path: final destination. Its folder is created if missing.

    Yields:
      A path in the same folder for the caller to write to. If the block raises,
      the temporary file is removed and `path` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, suffix = os.path.splitext(os.path.basename(path))
    handle, temporary_path = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{suffix}", dir=folder)
    os.close(handle)
    try:
        yield temporary_path
        # mkstemp creates the file readable by its owner only; give it the permissions
        # a plain open() would have given.
        os.chmod(temporary_path, 0o666 & ~_current_umask())
        os.replace(temporary_path, path)
    finally:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output_path(path) as temporary_path:
        with open(temporary_path, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON to `path` atomically.

    NaN and infinite floats become null, because JSON has no literal for them and
    strict parsers reject Python's `NaN`.
    """
    text = json.dumps(_finite_or_none(value), indent=2, sort_keys=False, allow_nan=False)
    write_text_atomic(path, text + "\n")


def is_temporary_file(name: str) -> bool:
    """Tell whether a file name is a leftover of an interrupted atomic write."""
    return name.startswith(".") and ".partial" in name
