"""On-disk cache of database descriptors, one .npz file per (system, dataset, settings).

The cache key is a SHA-256 of the system name, `system.settings()`, the dataset name
and the name, size and modification time of every database image file. Any change of
a setting or a file gives a new key, so stale descriptors are never reused. Files are
written atomically. A file that cannot be read, or whose stored key differs, is
recomputed with a warning.

Descriptors are stored without pickle. Supported types: numpy arrays of one shape and
dtype (stacked), and instances of one frozen dataclass from `pire_jax` whose fields are
numpy arrays with a shared first axis (each field concatenated, with offsets).
"""

import dataclasses
import hashlib
import importlib
import json
import os
import zipfile
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from pire_jax import atomic_io, images

CACHE_FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 16  # images decoded and described at a time, to bound memory


def cache_key(system_name: str, settings: dict[str, Any], dataset_name: str, image_paths: Sequence[str]) -> str:
    """Hash the system, its settings, the dataset and its files into a hex SHA-256."""
    files = []
    for path in image_paths:
        status = os.stat(path)
        files.append([os.path.basename(path), status.st_size, status.st_mtime_ns])
    description = {
        "format": CACHE_FORMAT_VERSION,
        "system": system_name,
        "settings": settings,
        "dataset": dataset_name,
        "files": files,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def cache_path(cache_dir: str, system_name: str, dataset_name: str, key: str) -> str:
    """Return `<cache_dir>/<system>/<dataset>_<first 16 hex digits of the key>.npz`."""
    return os.path.join(cache_dir, system_name, f"{dataset_name}_{key[:16]}.npz")


def encode_descriptors(descriptors: Sequence[Any]) -> dict[str, np.ndarray]:
    """Turn a list of descriptors into named arrays for `np.savez`.

    Raises:
      TypeError: the descriptors are of a type this cache cannot store.
    """
    if not descriptors:
        return {"kind": np.array("empty")}
    first = descriptors[0]
    if isinstance(first, np.ndarray):
        if not all(
            isinstance(item, np.ndarray) and item.shape == first.shape and item.dtype == first.dtype for item in descriptors
        ):
            raise TypeError("Cannot cache numpy descriptors of different shapes or dtypes; expected one shape.")
        return {"kind": np.array("stacked"), "stacked": np.stack(descriptors)}
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        cls = type(first)
        if not cls.__module__.startswith("pire_jax."):
            raise TypeError(f"Cannot cache descriptors of type {cls.__qualname__}: only pire_jax dataclasses are allowed.")
        if not all(type(item) is cls for item in descriptors):
            raise TypeError(f"Cannot cache a mix of descriptor types with {cls.__qualname__}.")
        arrays = {"kind": np.array("dataclass"), "type": np.array(f"{cls.__module__}:{cls.__qualname__}")}
        field_names = [field.name for field in dataclasses.fields(cls)]
        arrays["fields"] = np.array(field_names)
        for name in field_names:
            values = [getattr(item, name) for item in descriptors]
            if not all(isinstance(value, np.ndarray) and value.ndim >= 1 for value in values):
                raise TypeError(f"Cannot cache {cls.__qualname__}.{name}: every field must be a numpy array.")
            lengths = np.array([value.shape[0] for value in values], dtype=np.int64)
            arrays[f"field_{name}"] = np.concatenate(values, axis=0)
            arrays[f"offsets_{name}"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return arrays
    raise TypeError(f"Cannot cache descriptors of type {type(first).__name__}; expected numpy arrays or dataclasses.")


def decode_descriptors(arrays: dict[str, np.ndarray]) -> list[Any]:
    """Invert `encode_descriptors`.

    Raises:
      ValueError: the arrays are malformed or name an unknown type.
    """
    kind = str(arrays["kind"])
    if kind == "empty":
        return []
    if kind == "stacked":
        return list(arrays["stacked"])
    if kind != "dataclass":
        raise ValueError(f"Unknown cached descriptor kind {kind!r}.")
    module_name, _, qualified_name = str(arrays["type"]).partition(":")
    if not module_name.startswith("pire_jax."):
        raise ValueError(f"Cached descriptor type {module_name}:{qualified_name} is not a pire_jax type.")
    cls = importlib.import_module(module_name)
    for part in qualified_name.split("."):
        cls = getattr(cls, part)
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"Cached descriptor type {qualified_name} is not a dataclass.")
    field_names = [str(name) for name in arrays["fields"]]
    offsets = {name: arrays[f"offsets_{name}"] for name in field_names}
    counts = {len(value) - 1 for value in offsets.values()}
    if len(counts) != 1:
        raise ValueError("Cached descriptor fields disagree on the number of descriptors.")
    n_descriptors = counts.pop()
    values = {name: arrays[f"field_{name}"] for name in field_names}
    return [
        cls(**{name: values[name][offsets[name][item] : offsets[name][item + 1]] for name in field_names})
        for item in range(n_descriptors)
    ]


def save_descriptors(path: str, key: str, descriptors: Sequence[Any]) -> None:
    """Write descriptors and their key atomically to `path`."""
    arrays = encode_descriptors(descriptors)
    arrays["key"] = np.array(key)
    arrays["count"] = np.array(len(descriptors), dtype=np.int64)
    with atomic_io.atomic_output_path(path) as temporary_path:
        with open(temporary_path, "wb") as stream:
            np.savez(stream, **arrays)


def load_descriptors(path: str, key: str) -> list[Any]:
    """Read descriptors saved by `save_descriptors`.

    Raises:
      ValueError: the file is unreadable, malformed or stored under another key.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        stored_key = str(arrays["key"])
        if stored_key != key:
            raise ValueError(f"it belongs to other settings (key {stored_key[:16]}, expected {key[:16]})")
        descriptors = decode_descriptors(arrays)
        if len(descriptors) != int(arrays["count"]):
            raise ValueError(f"it contains {len(descriptors)} descriptors instead of {int(arrays['count'])}")
    except (OSError, KeyError, EOFError, ValueError, TypeError, AttributeError, ImportError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot use cached descriptors {path}: {error}.") from error
    return descriptors


def describe_images(
    system: Any,
    image_paths: Sequence[str],
    load: Callable[[str], np.ndarray] = images.load_image,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[Any]:
    """Describe image files with `system.describe_database`, a chunk at a time.

    An unreadable image gets `system.empty_descriptor()` with a logged error when the
    system defines it; otherwise the error propagates.
    """
    descriptors: list[Any] = []
    for start in range(0, len(image_paths), chunk_size):
        chunk_paths = image_paths[start : start + chunk_size]
        loaded, unreadable = [], {}
        for position, path in enumerate(chunk_paths):
            try:
                loaded.append(load(path))
            except images.ImageReadError as error:
                if not hasattr(system, "empty_descriptor"):
                    raise
                logging.error("Image %s is unreadable and gets an empty %s descriptor: %s", path, system.name, error)
                unreadable[position] = system.empty_descriptor()
        described = iter(system.describe_database(loaded) if loaded else [])
        descriptors.extend(unreadable[position] if position in unreadable else next(described)
                           for position in range(len(chunk_paths)))
        logging.info("%s descriptors: %d of %d images done.", system.name, len(descriptors), len(image_paths))
    return descriptors


def load_or_compute_database_descriptors(
    system: Any,
    dataset_name: str,
    image_paths: Sequence[str],
    cache_dir: str | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[Any]:
    """Return the database descriptors, from the cache when it contains them for these settings and files.

    Args:
      system: a `RetrievalSystem`.
      dataset_name: name of the collection, part of the key.
      image_paths: database image files, in database order.
      cache_dir: cache folder; None computes without caching.
      chunk_size: images decoded and described at a time.

    Returns:
      One descriptor per image, in the order of `image_paths`.
    """
    if cache_dir is None:
        return describe_images(system, image_paths, chunk_size=chunk_size)
    key = cache_key(system.name, system.settings(), dataset_name, image_paths)
    path = cache_path(cache_dir, system.name, dataset_name, key)
    if os.path.exists(path):
        try:
            descriptors = load_descriptors(path, key)
            logging.info("Loaded %d %s descriptors of %s from %s.", len(descriptors), system.name, dataset_name, path)
            return descriptors
        except ValueError as error:
            logging.warning("Recomputing descriptors: %s", error)

    logging.info("Computing %s descriptors of %d %s images (cache miss: %s).", system.name, len(image_paths),
                 dataset_name, path)
    descriptors = describe_images(system, image_paths, chunk_size=chunk_size)
    save_descriptors(path, key, descriptors)
    logging.info("Saved %s descriptors to %s.", system.name, path)
    return descriptors


def database_descriptors_for_dataset(system: Any, dataset: Any, cache_dir: str | None) -> list[Any]:
    """Describe a `RetrievalDataset`'s database images through the cache (see `load_or_compute_database_descriptors`)."""
    paths = [dataset.image_path(index) for index in range(len(dataset.image_names))]
    return load_or_compute_database_descriptors(system, dataset.name, paths, cache_dir)
