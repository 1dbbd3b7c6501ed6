"""absl flags of the classical retrieval systems (sift_he, bow, cedd, gist) and the make_system options built from them.

A binary imports this module, which defines the flags, and after parsing calls
`classical_system_options(FLAGS.system, data_root=FLAGS.data_root)` to get the keyword
arguments of `pire_jax.retrieval.make_system`.
"""

from typing import Any

from absl import flags

from pire_jax.global_features import cedd, gist
from pire_jax.local_features import codebook, hamming_embedding, inverted_file, sift, vocabulary

CLASSICAL_SYSTEMS = ("sift_he", "bow", "cedd", "gist")
LOCAL_SYSTEMS = ("sift_he", "bow")

# SIFT (OpenCV cv2.SIFT_create parameters; defaults are OpenCV's, i.e. Lowe 2004).
_SIFT_DEFAULTS = sift.SiftConfig()
flags.DEFINE_integer("sift_n_features", _SIFT_DEFAULTS.n_features, "Keep the n strongest SIFT keypoints; 0 keeps all.")
flags.DEFINE_integer("sift_n_octave_layers", _SIFT_DEFAULTS.n_octave_layers, "SIFT scales per octave.")
flags.DEFINE_float("sift_contrast_threshold", _SIFT_DEFAULTS.contrast_threshold,
                   "SIFT DoG contrast threshold (OpenCV units: grey levels scaled to 0..1).")
flags.DEFINE_float("sift_edge_threshold", _SIFT_DEFAULTS.edge_threshold,
                   "SIFT maximum ratio of principal curvatures for a keypoint.")
flags.DEFINE_float("sift_sigma", _SIFT_DEFAULTS.sigma, "SIFT Gaussian blur of the base octave, in pixels.")
flags.DEFINE_boolean("sift_root", _SIFT_DEFAULTS.root_sift, "Use RootSIFT descriptors (L1 normalise, square root).")
flags.DEFINE_integer("sift_max_size", None,
                     "Downscale images whose long side exceeds this many pixels before SIFT; unset keeps native size.")

# Visual codebook and the Hamming Embedding parameters learned with it.
flags.DEFINE_integer("codebook_size", vocabulary.DEFAULT_CODEBOOK_SIZE,
                     f"Number of visual words; training needs {codebook.MIN_DESCRIPTORS_PER_WORD} SIFT descriptors "
                     "per word.")
flags.DEFINE_string("codebook_training_dataset", None,
                    "Dataset whose images train the codebook and HE medians, e.g. ukbench56 to evaluate landmarks48. "
                    "Required for sift_he and bow.")
flags.DEFINE_string("codebook_training_root", None,
                    "Data root of --codebook_training_dataset; unset uses the evaluation data root.")
flags.DEFINE_integer("codebook_iterations", codebook.DEFAULT_ITERATIONS, "k-means iterations.")
flags.DEFINE_integer("codebook_seed", 0, "Seed of the k-means initialisation and of the training subsample.")
flags.DEFINE_string("codebook_dir", None,
                    "Folder of saved codebooks; unset uses $XDG_CACHE_HOME/pire_jax/vocabularies.")

# Hamming Embedding matching.
flags.DEFINE_integer("he_threshold", hamming_embedding.HAMMING_THRESHOLD,
                     "Maximum Hamming distance (bits of 64) for two same-word features to match.")
flags.DEFINE_enum("he_weighting", "none", list(inverted_file.WEIGHTINGS),
                  "Match weight: none (1 per match) or gaussian (exp(-h^2 / he_sigma^2)).")
flags.DEFINE_float("he_sigma", hamming_embedding.GAUSSIAN_SIGMA, "Width of the Gaussian match weighting, in bits.")
flags.DEFINE_boolean("he_burstiness", False,
                     "Apply intra-image burstiness normalisation (Jegou et al., CVPR 2009); also applies to bow.")
flags.DEFINE_integer("he_projection_seed", 0, "Seed of the random orthogonal HE projection.")

# GIST.
flags.DEFINE_boolean("gist_colour", False, "Use the 960-d colour GIST (lear's C code) instead of the 512-d grey one.")
flags.DEFINE_integer("gist_image_size", 256, "Side of the square image GIST filters, in pixels.")
flags.DEFINE_list("gist_orientations", None,
                  "Orientations per scale, high frequency first, e.g. 8,8,8,8; unset uses 8,8,8,8 (grey) or 8,8,4 "
                  "(colour).")
flags.DEFINE_integer("gist_blocks", 4, "GIST averages filter responses on a grid of n x n blocks.")
flags.DEFINE_float("gist_prefilter_fc", 4.0, "Cut-off of the GIST prefilter, in cycles per image.")
flags.DEFINE_integer("gist_boundary_extension", 32, "Symmetric padding before Gabor filtering, in pixels.")

# CEDD.
_CEDD_DEFAULTS = cedd.CeddConfig()
flags.DEFINE_float("cedd_t0", _CEDD_DEFAULTS.thresholds[0],
                   "CEDD: a block is non-edge when its strongest mask response is below this, in grey levels.")
flags.DEFINE_float("cedd_t1", _CEDD_DEFAULTS.thresholds[1], "CEDD: non-directional edge ratio threshold.")
flags.DEFINE_float("cedd_t2", _CEDD_DEFAULTS.thresholds[2], "CEDD: horizontal and vertical edge ratio threshold.")
flags.DEFINE_float("cedd_t3", _CEDD_DEFAULTS.thresholds[3], "CEDD: 45 and 135 degree edge ratio threshold.")
flags.DEFINE_integer("cedd_blocks_per_side", _CEDD_DEFAULTS.blocks_per_side,
                     "CEDD grid size (blocks per side) for images whose short side has twice as many pixels.")
flags.DEFINE_integer("cedd_max_size", None,
                     "Downscale images whose long side exceeds this many pixels before CEDD; unset keeps native size.")

FLAGS = flags.FLAGS


def sift_config_from_flags() -> sift.SiftConfig:
    """Return the SIFT settings given by the --sift_* flags."""
    return sift.SiftConfig(
        n_features=FLAGS.sift_n_features,
        n_octave_layers=FLAGS.sift_n_octave_layers,
        contrast_threshold=FLAGS.sift_contrast_threshold,
        edge_threshold=FLAGS.sift_edge_threshold,
        sigma=FLAGS.sift_sigma,
        root_sift=FLAGS.sift_root,
        max_size=FLAGS.sift_max_size,
    )


def local_system_options(data_root: str | None) -> dict[str, Any]:
    """Return the make_system options of sift_he and bow from the --sift_*, --codebook_* and --he_* flags."""
    if not FLAGS.codebook_training_dataset:
        raise ValueError(
            "sift_he and bow need --codebook_training_dataset (e.g. ukbench56), the dataset that trains the codebook."
        )
    return {
        "sift_config": sift_config_from_flags(),
        "vocabulary_config": vocabulary.VocabularyConfig(
            n_words=FLAGS.codebook_size,
            n_iterations=FLAGS.codebook_iterations,
            seed=FLAGS.codebook_seed,
            projection_seed=FLAGS.he_projection_seed,
        ),
        "matching": inverted_file.MatchingConfig(
            hamming_threshold=FLAGS.he_threshold,
            weighting=FLAGS.he_weighting,
            sigma=FLAGS.he_sigma,
            burstiness=FLAGS.he_burstiness,
        ),
        "training_dataset": FLAGS.codebook_training_dataset,
        "training_data_root": FLAGS.codebook_training_root or data_root,
        "vocabulary_dir": FLAGS.codebook_dir,
    }


def gist_config_from_flags() -> gist.GistConfig:
    """Return the GIST settings given by the --gist_* flags."""
    orientations = None
    if FLAGS.gist_orientations:
        try:
            orientations = tuple(int(value) for value in FLAGS.gist_orientations)
        except ValueError as error:
            raise ValueError(
                f"Invalid --gist_orientations {FLAGS.gist_orientations}; expected integers such as 8,8,8,8."
            ) from error
    return gist.GistConfig(
        colour=FLAGS.gist_colour,
        image_size=FLAGS.gist_image_size,
        orientations_per_scale=orientations,
        n_blocks=FLAGS.gist_blocks,
        prefilter_fc=FLAGS.gist_prefilter_fc,
        boundary_extension=FLAGS.gist_boundary_extension,
    )


def cedd_config_from_flags() -> cedd.CeddConfig:
    """Return the CEDD settings given by the --cedd_* flags."""
    return cedd.CeddConfig(
        thresholds=(FLAGS.cedd_t0, FLAGS.cedd_t1, FLAGS.cedd_t2, FLAGS.cedd_t3),
        blocks_per_side=FLAGS.cedd_blocks_per_side,
        max_size=FLAGS.cedd_max_size,
    )


def classical_system_options(system_name: str, data_root: str | None = None) -> dict[str, Any]:
    """Return the keyword options of `make_system(system_name, ...)` from the parsed flags.

    Args:
      system_name: a registered system name; systems that are not classical get {}.
      data_root: the evaluation data root, used to find the codebook training dataset
        when --codebook_training_root is unset.
    """
    if system_name in LOCAL_SYSTEMS:
        return local_system_options(data_root)
    if system_name == "cedd":
        return {"config": cedd_config_from_flags()}
    if system_name == "gist":
        return {"config": gist_config_from_flags()}
    return {}
