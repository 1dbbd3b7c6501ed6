"""Safe reading of PyTorch checkpoint files (.pth) for the converters.

torch is imported here only, and only when a .pth file is read, so the rest of the
project runs without it. Files are read with `torch.load(weights_only=True)`, which
builds tensors and plain containers but never runs code from the file. NumPy arrays
and scalars are allowed too, because cirtorch stores its learned whitening
(`meta['Lw']`) as NumPy arrays.
"""

import os
import pickle
from typing import Any

import numpy as np

from weights_conversion.key_mapping import ConversionError

# torch.save writes a zip archive (torch >= 1.6) or a legacy pickle stream, which
# starts with the PROTO opcode 0x80.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"

# A corrupt or foreign file makes torch.load fail in many ways: UnpicklingError,
# RuntimeError from the zip reader, EOFError, KeyError from the legacy magic-number
# check, and others from deeper in the unpickler.
_TORCH_READ_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    KeyError,
    ValueError,
    IndexError,
    TypeError,
    AttributeError,
    OSError,
)


def _numpy_safe_globals() -> list[Any]:
    """NumPy constructors that rebuild arrays and scalars from data, under their numpy 1 and numpy 2 names."""
    from numpy._core import multiarray  # pylint: disable=import-outside-toplevel

    safe_globals: list[Any] = [
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,  # pylint: disable=protected-access
        multiarray.scalar,
        # Files pickled with numpy 1.x (e.g. the 2018 cirtorch releases) name the module numpy.core.
        # NOTE: the tests write their checkpoints with numpy 2, so these two aliases are not exercised.
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # pylint: disable=protected-access
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]
    for scalar_type in (np.bool_, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64):
        safe_globals.append(type(np.dtype(scalar_type)))
    return safe_globals


def load_torch_file(path: str, expected: str) -> Any:
    """Read a .pth file with `torch.load(..., map_location="cpu", weights_only=True)`.

    Args:
      path: the file.
      expected: what the file should be, for error messages (e.g. "a cirtorch checkpoint").

    Returns:
      The unpickled object (tensors, NumPy arrays and plain containers only).

    Raises:
      ConversionError: the file is missing, is not a PyTorch file, is truncated, or
        contains Python objects that `weights_only=True` rejects. Also raised when
        torch is not installed.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"Input file not found: {path}.")
    with open(path, "rb") as stream:
        header = stream.read(4)
    if not (header.startswith(_ZIP_MAGIC) or header.startswith(_PICKLE_PROTO)):
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (it is neither a torch.save zip archive nor a pickle stream); "
            f"expected {expected}. Check the --input and --format flags."
        )

    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ConversionError(
            f"Reading {path} needs PyTorch, which is not installed. Install the optional extra: "
            "pip install 'pire_jax[torch]'."
        ) from error

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise ConversionError(
                f"{path} contains Python objects other than tensors, NumPy arrays and plain containers, so it "
                f"cannot be read safely with torch.load(weights_only=True); expected {expected}. "
                "Save the state dict (and metadata) alone with torch.save and convert that file."
            ) from error
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({error}); expected {expected}.") from error
    except _TORCH_READ_ERRORS as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConversionError(
            f"{path} is truncated or corrupt: torch.load failed with {type(error).__name__}: {first_line}. "
            f"Expected {expected}; download or export the file again."
        ) from error


def to_numpy(value: Any, description: str) -> np.ndarray:
    """Convert a torch tensor or array-like from a checkpoint to a NumPy array."""
    if hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # NumPy has no bfloat16, and the network is float32 anyway.
        return tensor.numpy()
    if isinstance(value, (np.ndarray, np.generic, list, tuple, float, int)):
        return np.asarray(value)
    raise ConversionError(f"Invalid value for {description}: expected a tensor or array, got {type(value).__name__}.")
