"""A restricted unpickler for ground-truth files, so that a malicious pickle cannot run code.

cirtorch and revisitop ship their ground truth as pickles (`gnd_<name>.pkl`). A plain
`pickle.load` would import and call whatever the file names. This unpickler admits
only plain containers, numbers and strings (which need no imports), numpy arrays and
scalars (revisitop's pickles hold `np.ndarray`), and numpy dtypes. Any other global
raises `UnsafePickleError`.
"""

import io
import pickle
from typing import Any, BinaryIO


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that refers to a global outside the allow-list."""


# (module, name) pairs a ground-truth pickle may reference. numpy moved its core
# module to `numpy._core` in 2.0, and pickles written by either version name theirs.
_NUMPY_CORE_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_ALLOWED_GLOBALS = frozenset(
    [(module, "_reconstruct") for module in _NUMPY_CORE_MODULES]
    + [(module, "scalar") for module in _NUMPY_CORE_MODULES]
    + [(module, "_frombuffer") for module in _NUMPY_CORE_MODULES]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "dtype"), ("numpy._core.multiarray", "dtype")]
    + [("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("_codecs", "encode")]
)


def _is_numpy_dtype_class(module: str, name: str) -> bool:
    # numpy >= 1.25 pickles dtypes through classes such as numpy.dtypes.Int64DType.
    return module == "numpy.dtypes" and name.endswith("DType")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or _is_numpy_dtype_class(module, name):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"Refusing to load global {module}.{name}: ground-truth pickles may only contain "
            "containers, numbers, strings and numpy arrays."
        )


def load_restricted_pickle(stream: BinaryIO) -> Any:
    """Unpickle a ground-truth file with the allow-list described above.

    Args:
      stream: binary file object positioned at the start of the pickle.

    Returns:
      The unpickled object.

    Raises:
      UnsafePickleError: the pickle references a global outside the allow-list.
      pickle.UnpicklingError, EOFError: the pickle is malformed or truncated.
    """
    return _RestrictedUnpickler(stream, encoding="latin1").load()


def loads_restricted_pickle(data: bytes) -> Any:
    """Like `load_restricted_pickle`, from bytes."""
    return load_restricted_pickle(io.BytesIO(data))
