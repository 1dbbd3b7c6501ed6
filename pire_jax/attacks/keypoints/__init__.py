"""SIFT keypoint removal and injection attacks (RMD, LS, FMD, RDG and their combinations).

`apply_query_modification` (registry.py) is the entry point for experiments. The scale
space is modelled in scale_space.py and dog_kernels.py, and the attack loop shared by
all attacks is in working_image.py, keypoint_sets.py and least_distance.py. Each attack
has its own module.
"""

from pire_jax.attacks.keypoints.registry import (
    QUERY_MODIFICATIONS,
    apply_query_modification,
    default_config,
    keypoint_report,
    make_config,
)
