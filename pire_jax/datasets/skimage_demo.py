"""A small retrieval benchmark built from the photos that ship inside scikit-image.

It lets the main job run on a fresh machine with nothing but the package registries.
Six photographed objects each get three views. The first view of each is a query and
the other two are its positives. The query is also in the database, as in
`landmarks48`, so it is junk for itself. Eight further scikit-image photos are distractors.
Only the motorcycle has two real viewpoints (the stereo pair); the other views are
crops, small rotations and exposure changes of one photo, so the benchmark is easy
and meant for smoke runs, not for numbers to publish.

Every image is 224x168 (4:3), so all queries share one shape and the attack compiles
once. The layout is the cirtorch one: `<root>/skimage_demo/jpg/*.jpg` and
`gnd_skimage_demo.pkl`.
"""

import os
import pickle

import numpy as np
from absl import logging
from PIL import Image, ImageEnhance

from pire_jax import atomic_io

DEMO_DATASET = "skimage_demo"
DEMO_ROOT_ENV = "PIRE_DEMO_ROOT"
IMAGE_SIZE = (224, 168)  # width, height
JPEG_QUALITY = 95

_OBJECTS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry")
_DISTRACTORS = ("camera", "horse", "moon", "brick", "grass", "coins", "clock", "hubble_deep_field")


def default_demo_root() -> str:
    """Folder the demo dataset is built in: PIRE_DEMO_ROOT, else ~/.cache/pire_jax/datasets."""
    return os.environ.get(DEMO_ROOT_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "pire_jax", "datasets")


def _photo(name: str) -> Image.Image:
    from skimage import data  # pylint: disable=import-outside-toplevel

    if name == "motorcycle":
        array = data.stereo_motorcycle()[0]
    else:
        array = getattr(data, name)()
    if array.dtype == bool:  # The horse silhouette is a binary image.
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8))


def _fit(image: Image.Image, box_fraction: float = 1.0, centre=(0.5, 0.5)) -> Image.Image:
    """Crop the largest 4:3 window (times `box_fraction`) around `centre` and resize to IMAGE_SIZE."""
    width, height = image.size
    target_ratio = IMAGE_SIZE[0] / IMAGE_SIZE[1]
    crop_width = min(width, height * target_ratio) * box_fraction
    crop_height = crop_width / target_ratio
    left = np.clip(centre[0] * width - crop_width / 2, 0, width - crop_width)
    top = np.clip(centre[1] * height - crop_height / 2, 0, height - crop_height)
    box = (int(left), int(top), int(left + crop_width), int(top + crop_height))
    return image.crop(box).resize(IMAGE_SIZE, Image.Resampling.LANCZOS)


def _views(name: str) -> list[Image.Image]:
    photo = _photo(name)
    first = _fit(photo)
    if name == "motorcycle":
        from skimage import data  # pylint: disable=import-outside-toplevel

        second = _fit(Image.fromarray(data.stereo_motorcycle()[1]))
    else:
        second = _fit(photo, box_fraction=0.8, centre=(0.45, 0.55))
    rotated = photo.rotate(6, resample=Image.Resampling.BICUBIC, expand=False)
    third = ImageEnhance.Brightness(_fit(rotated, box_fraction=0.85, centre=(0.55, 0.45))).enhance(1.15)
    return [first, second, third]


def build_skimage_demo(root: str | None = None) -> str:
    """Write the demo dataset under `root` (once) and return `root`.

    An existing, complete copy is reused; every file is written atomically.

    Args:
      root: data root to write `skimage_demo/` into; defaults to `default_demo_root()`.

    Returns:
      The data root, to pass to `load_dataset(root, "skimage_demo")`.
    """
    root = root or default_demo_root()
    folder = os.path.join(root, DEMO_DATASET)
    ground_truth_path = os.path.join(folder, f"gnd_{DEMO_DATASET}.pkl")
    if os.path.isfile(ground_truth_path):
        return root

    logging.info("Building the scikit-image demo dataset in %s.", folder)
    image_names: list[str] = []
    pictures: dict[str, Image.Image] = {}
    for name in _OBJECTS:
        for view, picture in enumerate(_views(name)):
            pictures[f"{name}_{view}"] = picture
            image_names.append(f"{name}_{view}")
    for name in _DISTRACTORS:
        pictures[f"distractor_{name}"] = _fit(_photo(name))
        image_names.append(f"distractor_{name}")

    for name, picture in pictures.items():
        with atomic_io.atomic_output_path(os.path.join(folder, "jpg", name + ".jpg")) as temporary_path:
            picture.save(temporary_path, format="JPEG", quality=JPEG_QUALITY)

    position = {name: index for index, name in enumerate(image_names)}
    query_names = [f"{name}_0" for name in _OBJECTS]
    ground_truth = {
        "imlist": image_names,
        "qimlist": query_names,
        "gnd": [
            {
                "bbx": [0.0, 0.0, float(IMAGE_SIZE[0]), float(IMAGE_SIZE[1])],
                "ok": [position[f"{name}_1"], position[f"{name}_2"]],
                "junk": [position[f"{name}_0"]],
            }
            for name in _OBJECTS
        ],
    }
    # The ground truth goes last, so its presence means the images are complete.
    atomic_io.write_bytes_atomic(ground_truth_path, pickle.dumps(ground_truth, protocol=4))
    return root
