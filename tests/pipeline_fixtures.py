"""Builders for the pipeline and binary tests: a tiny cirtorch-layout dataset and a random VGG16-GeM network file.

The dataset has a few groups of visually related 32x48 photos (one pattern per group,
shifted, brightened and noised per member) plus unrelated distractors, so any sensible
descriptor ranks a query's group first. Its pickle follows the old protocol of
cirtorch's `gnd_oxford5k.pkl`: `imlist`, `qimlist` and per query `bbx`, `ok`, `junk`.
"""

import io
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from pire_jax.models import IMAGENET_RGB, RetrievalNetwork, save_network
from pire_jax.models.retrieval_network import NetworkSpec

HEIGHT, WIDTH = 32, 48
N_GROUPS = 3
MEMBERS_PER_GROUP = 3
N_DISTRACTORS = 2
# Rounds to x 2..45 and y 2..30, so a "bb" query is a 28x43 crop of its 32x48 photo.
QUERY_BOX = (1.6, 2.2, 45.4, 30.0)
BB_QUERY_SHAPE = (28, 43, 3)
CORRUPT_QUERY = "truncated_query"
NETWORK_FILE_NAME = "vgg16_gem_random.msgpack"


def group_member_name(group: int, member: int) -> str:
    return f"group{group}_{member}"


def query_names(with_corrupt_query: bool) -> list[str]:
    """Return the query names in dataset order; the corrupt query sits second, between valid ones."""
    names = [group_member_name(group, 0) for group in range(N_GROUPS)]
    if with_corrupt_query:
        names.insert(1, CORRUPT_QUERY)
    return names


def _group_pattern(rng: np.random.Generator, group: int) -> np.ndarray:
    """Draw a smooth colour field with stripes whose direction and period depend on the group, in grey levels."""
    coarse = rng.integers(30, 226, (3, 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC), np.float64)
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    angle = np.pi * group / N_GROUPS
    period = 6.0 + 3.0 * group
    stripes = 35.0 * np.sin(2.0 * np.pi * (rows * np.sin(angle) + columns * np.cos(angle)) / period)
    return smooth + stripes[..., None]


def _member_image(pattern: np.ndarray, member: int, rng: np.random.Generator) -> np.ndarray:
    """Derive one view of a group: shifted by `member` pixels, brightened and noised, as uint8."""
    view = np.roll(pattern, shift=(member, member), axis=(0, 1))
    view = view + 6.0 * (member - 1) + rng.normal(0.0, 4.0, view.shape)
    return np.clip(np.rint(view), 0, 255).astype(np.uint8)


def _jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_tiny_dataset(root: str | os.PathLike, name: str, with_corrupt_query: bool = False) -> str:
    """Write `<root>/<name>/jpg/*.jpg` and `<root>/<name>/gnd_<name>.pkl` and return `root`.

    Every group's first photo is a query. It is also in the database and listed as
    junk for itself, so its positives are the other members of its group. With
    `with_corrupt_query`, an extra query sits second in `qimlist`. Its JPEG is cut in
    half, as after an interrupted download. It is not in the database, and its
    positives are group 1.
    """
    folder = Path(root) / name
    image_folder = folder / "jpg"
    image_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)

    image_names = []
    for group in range(N_GROUPS):
        pattern = _group_pattern(rng, group)
        for member in range(MEMBERS_PER_GROUP):
            image_name = group_member_name(group, member)
            (image_folder / f"{image_name}.jpg").write_bytes(_jpeg_bytes(_member_image(pattern, member, rng)))
            image_names.append(image_name)
    for index in range(N_DISTRACTORS):
        pattern = _group_pattern(rng, N_GROUPS + index)
        image_name = f"distractor_{index}"
        (image_folder / f"{image_name}.jpg").write_bytes(_jpeg_bytes(_member_image(pattern, 0, rng)))
        image_names.append(image_name)

    ground_truth = []
    for group in range(N_GROUPS):
        members = [image_names.index(group_member_name(group, member)) for member in range(MEMBERS_PER_GROUP)]
        ground_truth.append({"bbx": list(QUERY_BOX), "ok": members[1:], "junk": members[:1]})
    if with_corrupt_query:
        complete = _jpeg_bytes(_member_image(_group_pattern(rng, 1), 0, rng))
        (image_folder / f"{CORRUPT_QUERY}.jpg").write_bytes(complete[: len(complete) // 2])
        group_1 = [image_names.index(group_member_name(1, member)) for member in range(MEMBERS_PER_GROUP)]
        ground_truth.insert(1, {"bbx": list(QUERY_BOX), "ok": group_1, "junk": []})

    raw = {"imlist": image_names, "qimlist": query_names(with_corrupt_query), "gnd": ground_truth}
    with open(folder / f"gnd_{name}.pkl", "wb") as stream:
        pickle.dump(raw, stream)
    return str(root)


def random_vgg16_gem() -> RetrievalNetwork:
    """Build VGG16-GeM with He-scaled random kernels (ImageNet RGB input).

    Flax's default LeCun-normal kernels about halve the mean square of the activations
    at each of the 13 ReLUs. Multiplying every kernel by sqrt(2) gives He scaling,
    which keeps the activations and PIRE's gradients at a usable size.
    """
    spec = NetworkSpec(arch="vgg16", input_convention=IMAGENET_RGB)
    variables = spec.build_module().init(jax.random.PRNGKey(0), jnp.zeros((1, HEIGHT, WIDTH, 3), jnp.float32))
    variables = jax.tree_util.tree_map_with_path(
        lambda path, value: value * np.sqrt(2.0) if path[-1].key == "kernel" else value, variables
    )
    return RetrievalNetwork.from_params("vgg16", variables, IMAGENET_RGB)


def tiny_network_file(tmp_path_factory) -> str:
    """Return a random VGG16-GeM file written by `save_network`, writing it once per test session."""
    path = tmp_path_factory.getbasetemp() / "tiny_network" / NETWORK_FILE_NAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_network(random_vgg16_gem(), path)
    return str(path)
