"""absl flags shared by the experiment binaries: data, neural network, feature cache, and system options.

Importing this module defines the flags (and those of `classical_flags`). After
parsing, `open_dataset()` and `system_options(name)` turn them into library calls.
"""

import contextlib
import os
import sys
from typing import Any, Iterator

from absl import flags, logging

from experiments import classical_flags
from pire_jax import datasets
from pire_jax.datasets import skimage_demo
from pire_jax.datasets.ground_truth import GroundTruthError
from pire_jax.models.checkpoint import CheckpointError

flags.DEFINE_string(
    "data_root", None, f"Folder holding the datasets (<data_root>/<name>/jpg, gnd_<name>.pkl); unset reads "
    f"${datasets.DATA_ROOT_ENV}. The {skimage_demo.DEMO_DATASET} dataset is built on demand in "
    f"${skimage_demo.DEMO_ROOT_ENV} (default ~/.cache/pire_jax/datasets) instead."
)
flags.DEFINE_string("dataset", skimage_demo.DEMO_DATASET, "Dataset name, e.g. landmarks48, oxford5k, skimage_demo.")
flags.DEFINE_boolean(
    "restrict_to_present", False, "Evaluate on the images present on disk only (e.g. the 10-photo oxford5k)."
)
flags.DEFINE_enum("query_mode", "bb", list(datasets.QUERY_MODES), "bb: query cropped to its bounding box; wi: whole image.")

DEFAULT_WEIGHTS_FILE = "vgg16_gem_keras.msgpack"
flags.DEFINE_string(
    "weights", None, "Converted network file (python -m weights_conversion). Unset: "
    f"$PIRE_WEIGHTS_FILE, else weights/{DEFAULT_WEIGHTS_FILE} as written by scripts/fetch_vgg16_weights.sh."
)
flags.DEFINE_integer("image_size", 1024, "Maximum long side of queries and database images, in pixels (downscale only).")
flags.DEFINE_boolean("multiscale", False, "Neural descriptors at scales 1, 1/sqrt(2), 1/2 (cirtorch) instead of 1.")
flags.DEFINE_boolean("learned_whitening", False, "Apply the network's learned whitening (cirtorch meta['Lw']).")
flags.DEFINE_integer("descriptor_batch_size", 8, "Maximum number of equally shaped images per descriptor forward pass.")
flags.DEFINE_string(
    "cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "pire_jax", "features"),
    "Folder of cached database descriptors; empty disables the cache.",
)

FLAGS = flags.FLAGS


def weights_path() -> str:
    """Return the network file from --weights, $PIRE_WEIGHTS_FILE or the default location, checking it exists."""
    path = FLAGS.weights or os.environ.get("PIRE_WEIGHTS_FILE") or os.path.join("weights", DEFAULT_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Network file not found: {path}. Convert one with `python -m weights_conversion` "
            "(scripts/fetch_vgg16_weights.sh fetches and converts the Keras VGG16) and pass it with --weights."
        )
    return path


def open_dataset() -> datasets.RetrievalDataset:
    """Open --dataset under --data_root, building the scikit-image demo dataset when it is asked for."""
    if FLAGS.dataset == skimage_demo.DEMO_DATASET:
        root = skimage_demo.build_skimage_demo(FLAGS.data_root if FLAGS.data_root else None)
    else:
        root = datasets.resolve_data_root(FLAGS.data_root)
    return datasets.load_dataset(root, FLAGS.dataset, restrict_to_present=FLAGS.restrict_to_present)


def data_root_for_training() -> str | None:
    """Return the data root that holds the codebook training dataset, unless --codebook_training_root is set."""
    return FLAGS.data_root or os.environ.get(datasets.DATA_ROOT_ENV)


def system_options(name: str) -> dict[str, Any]:
    """Return the `make_system(name, ...)` keyword options given by the flags."""
    if name == "neural":
        return {
            "weights": weights_path(),
            "image_size": FLAGS.image_size,
            "multiscale": FLAGS.multiscale,
            "learned_whitening": FLAGS.learned_whitening,
            "batch_size": FLAGS.descriptor_batch_size,
        }
    return classical_flags.classical_system_options(name, data_root=data_root_for_training())


def cache_dir() -> str | None:
    return FLAGS.cache_dir or None


def project_flags() -> list[str]:
    """Return "--name=value" lines for the flags of this project's binaries, as recorded in results.json.

    Flags that absl, chex or other imported libraries define (for example absltest's
    --test_random_seed) do not describe the run, so they are left out.
    """
    # absl registers the flags defined in __main__ under the name sys.argv[0], a file path.
    main_path = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    lines = []
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        is_main = main_path is not None and os.path.abspath(module) == main_path
        if not (module.startswith("experiments.") or is_main):
            continue
        lines.extend(flag.serialize() for flag in module_flags if flag.value is not None)
    return sorted(set(lines))


@contextlib.contextmanager
def exit_on_input_error() -> Iterator[None]:
    """Log a missing or malformed input file (dataset, ground truth, network file) as one line and exit with status 1.

    The library's messages already name the file and the fix, so a traceback would only
    bury them. Other errors propagate with their traceback.
    """
    try:
        yield
    except (FileNotFoundError, GroundTruthError, CheckpointError) as error:
        logging.error("Invalid input: %s", error)
        sys.exit(1)
