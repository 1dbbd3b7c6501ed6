"""Retrieval benchmarks (cirtorch / revisitop layout) and their ground truth."""

from pire_jax.datasets.ground_truth import (
    OLD_PROTOCOL,
    REVISITED_PROTOCOL,
    GroundTruth,
    GroundTruthError,
    load_ground_truth_pickle,
    load_text_ground_truth,
    parse_ground_truth,
    protocol_views,
)
from pire_jax.datasets.retrieval_dataset import (
    DATA_ROOT_ENV,
    QUERY_MODES,
    WEIGHTS_DIR_ENV,
    RetrievalDataset,
    load_dataset,
    resolve_data_root,
)
from pire_jax.datasets.safe_pickle import UnsafePickleError
