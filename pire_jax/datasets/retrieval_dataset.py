"""Retrieval benchmarks in the cirtorch / revisitop layout: `<data_root>/<name>/jpg/*.jpg` + `gnd_<name>.pkl`."""

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

from pire_jax import images
from pire_jax.datasets import ground_truth as ground_truth_lib

DATA_ROOT_ENV = "PIRE_DATA_ROOT"
WEIGHTS_DIR_ENV = "PIRE_WEIGHTS_DIR"
QUERY_MODES = ("bb", "wi")  # bounding-box crop, whole image
IMAGE_FOLDER = "jpg"
IMAGE_EXTENSION = ".jpg"


def resolve_data_root(data_root: str | None) -> str:
    """Return the data root from a flag value, else from the PIRE_DATA_ROOT environment variable.

    Raises:
      ValueError: neither is set.
      FileNotFoundError: the folder does not exist.
    """
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise ValueError(f"No data root: pass --data_root or set the {DATA_ROOT_ENV} environment variable.")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Data root not found: {root}. Pass an existing folder with --data_root or {DATA_ROOT_ENV}.")
    return root


@dataclasses.dataclass(frozen=True)
class RetrievalDataset:
    """A background collection with its queries and ground truth.

    Attributes:
      name: dataset name, e.g. "oxford5k".
      folder: `<data_root>/<name>`.
      ground_truth: database and query names and relevance judgements.
      image_folder: folder holding the images, `<folder>/jpg` by default.
      image_extension: extension appended to every image name.
    """

    name: str
    folder: str
    ground_truth: ground_truth_lib.GroundTruth
    image_folder: str
    image_extension: str = IMAGE_EXTENSION

    @property
    def image_names(self) -> tuple[str, ...]:
        return self.ground_truth.image_names

    @property
    def query_names(self) -> tuple[str, ...]:
        return self.ground_truth.query_names

    @property
    def protocol(self) -> str:
        return self.ground_truth.protocol

    @property
    def queries(self) -> tuple[dict[str, Any], ...]:
        """Per-query ground truth in the revisitop layout (`bbx` plus index arrays)."""
        return self.ground_truth.queries

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_folder, self.image_names[index] + self.image_extension)

    def query_path(self, query: int) -> str:
        return os.path.join(self.image_folder, self.query_names[query] + self.image_extension)

    def query_box(self, query: int) -> tuple[float, float, float, float] | None:
        return self.queries[query]["bbx"]

    def load_database_image(self, index: int) -> np.ndarray:
        """Read database image `index` as uint8 RGB (H, W, 3)."""
        return images.load_image(self.image_path(index))

    def load_query(self, query: int, query_mode: str) -> np.ndarray:
        """Read query `query` as uint8 RGB, cropped to its bounding box when `query_mode` is "bb"."""
        if query_mode not in QUERY_MODES:
            raise ValueError(f"Invalid query mode {query_mode!r}; expected one of {QUERY_MODES}.")
        image = images.load_image(self.query_path(query))
        box = self.query_box(query)
        if query_mode == "bb" and box is not None:
            image = images.crop_to_box(image, box)
        return image

    def missing_images(self) -> list[str]:
        """Return the database and query names whose image file is absent."""
        names = dict.fromkeys(self.image_names + self.query_names)
        return [name for name in names if not os.path.isfile(os.path.join(self.image_folder, name + self.image_extension))]

    def restrict_to_present(self) -> "RetrievalDataset":
        """Return the dataset reduced to the images present on disk.

        Database images without a file are dropped and the ground-truth indices are
        remapped. Queries whose own image is absent are dropped. Positives and junk
        that point at absent images disappear, so a query can end up without
        positives; `compute_map` then skips it, as revisitop does.
        """
        present = [
            index
            for index, name in enumerate(self.image_names)
            if os.path.isfile(os.path.join(self.image_folder, name + self.image_extension))
        ]
        new_index = np.full(len(self.image_names), -1, dtype=np.int64)
        new_index[present] = np.arange(len(present))

        kept_names, kept_queries = [], []
        for name, query in zip(self.query_names, self.queries):
            if not os.path.isfile(os.path.join(self.image_folder, name + self.image_extension)):
                continue
            remapped = {"bbx": query["bbx"]}
            for key, value in query.items():
                if key != "bbx":
                    mapped = new_index[value]
                    remapped[key] = mapped[mapped >= 0]
            kept_names.append(name)
            kept_queries.append(remapped)
        if not present or not kept_queries:
            raise FileNotFoundError(
                f"Dataset {self.name}: no {'database images' if not present else 'query images'} are present in "
                f"{self.image_folder}. Check --data_root."
            )
        restricted = ground_truth_lib.GroundTruth(
            image_names=tuple(self.image_names[index] for index in present),
            query_names=tuple(kept_names),
            queries=tuple(kept_queries),
            protocol=self.protocol,
        )
        logging.info(
            "Dataset %s restricted to the images present: %d of %d database images, %d of %d queries.",
            self.name, len(present), len(self.image_names), len(kept_names), len(self.query_names),
        )
        return dataclasses.replace(self, ground_truth=restricted)

    def with_query_folder(self, query_folder: str, extension: str) -> "RetrievalDataset":
        """Return a copy whose query images are read from another folder (e.g. adversarial queries).

        Only queries move; the database stays where it is.
        """
        return _QueryFolderDataset(
            name=self.name,
            folder=self.folder,
            ground_truth=self.ground_truth,
            image_folder=self.image_folder,
            image_extension=self.image_extension,
            query_folder=query_folder,
            query_extension=extension,
        )


@dataclasses.dataclass(frozen=True)
class _QueryFolderDataset(RetrievalDataset):
    query_folder: str = ""
    query_extension: str = ".png"

    def query_path(self, query: int) -> str:
        return os.path.join(self.query_folder, self.query_names[query] + self.query_extension)


def load_dataset(
    data_root: str | None,
    name: str,
    restrict_to_present: bool = False,
) -> RetrievalDataset:
    """Open `<data_root>/<name>` with its `gnd_<name>.pkl` ground truth.

    Args:
      data_root: folder holding the datasets; None reads PIRE_DATA_ROOT.
      name: dataset folder name, e.g. "landmarks48", "oxford5k".
      restrict_to_present: evaluate on the images present only (see
        `RetrievalDataset.restrict_to_present`); otherwise a missing image is an error.

    Returns:
      The dataset.

    Raises:
      FileNotFoundError: the folder, the ground truth or (unless restricting) an image is missing.
      GroundTruthError: the ground-truth file is malformed.
    """
    root = resolve_data_root(data_root)
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
        available = sorted(entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry)))
        raise FileNotFoundError(
            f"Dataset {name!r} not found in {root}; available: {available}. Expected {folder}/jpg/ and "
            f"{folder}/gnd_{name}.pkl; pass the folder that contains {name}/ with --data_root or PIRE_DATA_ROOT."
        )
    ground_truth = ground_truth_lib.load_ground_truth_pickle(os.path.join(folder, f"gnd_{name}.pkl"))
    dataset = RetrievalDataset(
        name=name, folder=folder, ground_truth=ground_truth, image_folder=os.path.join(folder, IMAGE_FOLDER)
    )
    if restrict_to_present:
        return dataset.restrict_to_present()
    missing = dataset.missing_images()
    if missing:
        raise FileNotFoundError(
            f"Dataset {name}: {len(missing)} of {len(set(dataset.image_names + dataset.query_names))} images are "
            f"missing from {dataset.image_folder} (e.g. {missing[:3]}). Add them, or pass --restrict_to_present "
            "to evaluate on the images present."
        )
    return dataset
