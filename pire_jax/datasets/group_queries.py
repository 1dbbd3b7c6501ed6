"""An all-views query protocol: every member of a group of images queries for the other members.

Small multi-view sets such as `landmarks48` and `ukbench56` ship a `groups.json` that maps
each building or object to its image names. Using every member as a query gives many more
queries than the pickle's two per group, so the mAP is less noisy. The query is junk for
itself, and images outside every group (distractors) are never positives.
"""

import json
import os

import numpy as np

from pire_jax.datasets import ground_truth as ground_truth_lib

GROUPS_FILE = "groups.json"


def ground_truth_from_groups(ground_truth: ground_truth_lib.GroundTruth, groups_path: str) -> ground_truth_lib.GroundTruth:
    """Build old-protocol ground truth with one whole-image query per group member.

    Args:
      ground_truth: the dataset's ground truth, whose database list is kept.
      groups_path: JSON file {group name: [image names]}.

    Returns:
      Ground truth whose queries are the group members in file order, each with the
      other members as `ok` and itself as `junk`, and no bounding box.

    Raises:
      FileNotFoundError: the groups file is missing.
      GroundTruthError: the file is not a dict of name lists, or names an image that is
        not in the database.
    """
    if not os.path.isfile(groups_path):
        raise FileNotFoundError(f"Groups file not found: {groups_path}. Only datasets with a {GROUPS_FILE} support this protocol.")
    with open(groups_path, encoding="utf-8") as stream:
        groups = json.load(stream)
    if not isinstance(groups, dict) or not all(isinstance(members, list) for members in groups.values()):
        raise ground_truth_lib.GroundTruthError(f"Malformed groups file {groups_path}: expected {{group: [image names]}}.")
    position = {name: index for index, name in enumerate(ground_truth.image_names)}
    unknown = [name for members in groups.values() for name in members if name not in position]
    if unknown:
        raise ground_truth_lib.GroundTruthError(
            f"Groups file {groups_path} names {len(unknown)} images outside the database, e.g. {unknown[:3]}."
        )

    query_names, queries = [], []
    for members in groups.values():
        indices = np.array([position[name] for name in members], dtype=np.int64)
        for name, index in zip(members, indices):
            query_names.append(name)
            queries.append({"bbx": None, "ok": indices[indices != index], "junk": np.array([index], dtype=np.int64)})
    return ground_truth_lib.GroundTruth(
        image_names=ground_truth.image_names,
        query_names=tuple(query_names),
        queries=tuple(queries),
        protocol=ground_truth_lib.OLD_PROTOCOL,
    )
