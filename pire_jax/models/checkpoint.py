"""The converted network file: one msgpack file with the weights and JSON metadata, readable without torch.

Layout (written with `flax.serialization.msgpack_serialize`, which stores NumPy
arrays as msgpack extension values and cannot run code when read):

    {
      "format": "pire_jax.retrieval_network",
      "format_version": 1,
      "metadata_json": JSON text {"arch", "whitening_dim", "input_convention": {...},
                       "source": {"format", "file", "sha256", ...}},
      "variables": {"params": {...}, "batch_stats": {...}},   # Flax variables, float32
      "learned_whitening": {"name": str,
                            "single_scale": {"mean": (D,), "projection": (D_out, D)},
                            "multi_scale": {...}},              # optional, each part optional
    }

`weights_conversion` writes these files from cirtorch, torchvision and Keras ONNX
weights; `load_network` reads them.
"""

import hashlib
import json
import os
from typing import Any

import msgpack
import numpy as np
from absl import logging
from flax import serialization

import pire_jax
from pire_jax import atomic_io
from pire_jax.models.input_convention import InputConvention
from pire_jax.models.retrieval_network import (
    LearnedWhitening,
    NetworkSpec,
    RetrievalNetwork,
    WhiteningTransform,
    check_params,
)

FORMAT_NAME = "pire_jax.retrieval_network"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a valid pire_jax network file."""


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _whitening_to_tree(whitening: LearnedWhitening) -> dict[str, Any]:
    tree: dict[str, Any] = {"name": whitening.name}
    for key, transform in (("single_scale", whitening.single_scale), ("multi_scale", whitening.multi_scale)):
        if transform is not None:
            tree[key] = {
                "mean": np.asarray(transform.mean, np.float32),
                "projection": np.asarray(transform.projection, np.float32),
            }
    return tree


def _whitening_from_tree(tree: dict[str, Any]) -> LearnedWhitening:
    transforms = {}
    for key in ("single_scale", "multi_scale"):
        part = tree.get(key)
        transforms[key] = None
        if part is not None:
            transforms[key] = WhiteningTransform(
                mean=np.asarray(part["mean"], np.float32), projection=np.asarray(part["projection"], np.float32)
            )
    return LearnedWhitening(name=str(tree.get("name", "")), **transforms)


def save_network(network: RetrievalNetwork, path: str | os.PathLike) -> None:
    """Write a network to `path` atomically in the format described in this module's docstring."""
    metadata = {
        "arch": network.spec.arch,
        "whitening_dim": network.spec.whitening_dim,
        "input_convention": network.spec.input_convention.to_json(),
        "gem_p": network.gem_p,
        "source": network.metadata,
        "pire_jax_version": pire_jax.__version__,
    }
    contents: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata_json": json.dumps(metadata, sort_keys=True),
        "variables": network.params,
    }
    if network.learned_whitening is not None:
        contents["learned_whitening"] = _whitening_to_tree(network.learned_whitening)

    atomic_io.write_bytes_atomic(path, serialization.msgpack_serialize(contents))
    logging.info("Wrote %s network to %s (whitening_dim=%s).", network.spec.arch, path, network.spec.whitening_dim)


def _not_ours(path: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a pire_jax network file ({reason}). Convert the original weights first with "
        "`python -m weights_conversion --format {cirtorch,torchvision,keras-onnx} --arch ARCH --input IN --output OUT`."
    )


def load_network(path: str | os.PathLike) -> RetrievalNetwork:
    """Read a converted network file.

    Args:
      path: file written by `save_network` (usually through `python -m weights_conversion`).

    Returns:
      The network, with `checkpoint_sha256` set to the file's sha256.

    Raises:
      FileNotFoundError: `path` does not exist.
      CheckpointError: the file is not a pire_jax network file, has another format
        version, or its parameters do not fit its architecture.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Network file not found: {path}.")
    with open(path, "rb") as stream:
        data = stream.read()
    sha256 = hashlib.sha256(data).hexdigest()

    try:
        contents = serialization.msgpack_restore(data)
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as error:
        raise _not_ours(path, f"it is not msgpack: {error}") from error
    if not isinstance(contents, dict) or contents.get("format") != FORMAT_NAME:
        raise _not_ours(path, f"no {FORMAT_NAME!r} format marker")
    if contents.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {contents.get('format_version')}, but this pire_jax reads version "
            f"{FORMAT_VERSION}. Convert the original weights again with this version."
        )

    try:
        metadata = json.loads(contents["metadata_json"])
        input_convention = InputConvention.from_json(metadata["input_convention"])
        spec = NetworkSpec(
            arch=metadata["arch"], input_convention=input_convention, whitening_dim=metadata["whitening_dim"]
        )
        variables = contents["variables"]
        check_params(spec, variables, source=path)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is a damaged pire_jax network file: {error}") from error

    learned_whitening = None
    if "learned_whitening" in contents:
        learned_whitening = _whitening_from_tree(contents["learned_whitening"])

    network = RetrievalNetwork.from_params(
        spec.arch,
        variables,
        input_convention,
        learned_whitening=learned_whitening,
        metadata=metadata.get("source", {}),
        checkpoint_sha256=sha256,
    )
    logging.info(
        "Loaded %s GeM network from %s (p=%.4f, descriptor_dim=%d, learned whitening: %s, sha256 %s).",
        network.arch,
        path,
        network.gem_p,
        network.descriptor_dim,
        learned_whitening.name if learned_whitening else "none",
        sha256[:12],
    )
    return network
