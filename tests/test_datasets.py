"""RetrievalDataset: layout, query modes, missing images and the restrict-to-present mode."""

import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import require_file
from pire_jax.datasets import load_dataset, resolve_data_root
from pire_jax.evaluation import evaluate_ranks


def _make_dataset(root, name="tiny", present=("a", "b", "c")):
    folder = root / name
    (folder / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_name in present:
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / "jpg" / f"{image_name}.jpg")
    raw = {
        "imlist": ["a", "b", "c"],
        "qimlist": ["a", "c"],
        "gnd": [{"bbx": [2.4, 3.6, 12.5, 15.0], "ok": [1], "junk": [0]}, {"bbx": [0, 0, 30, 20], "ok": [0, 1], "junk": [2]}],
    }
    with open(folder / f"gnd_{name}.pkl", "wb") as stream:
        pickle.dump(raw, stream)
    return str(root)


def test_load_query_bb_crops_rounded_box(tmp_path):
    dataset = load_dataset(_make_dataset(tmp_path), "tiny")
    whole = dataset.load_query(0, "wi")
    cropped = dataset.load_query(0, "bb")
    assert whole.shape == (20, 30, 3)
    # Box [2.4, 3.6, 12.5, 15.0] rounds to x 2..12 (banker's rounding of 12.5), y 4..15.
    assert cropped.shape == (11, 10, 3)
    np.testing.assert_array_equal(cropped, whole[4:15, 2:12])


def test_load_query_rejects_unknown_mode(tmp_path):
    dataset = load_dataset(_make_dataset(tmp_path), "tiny")
    with pytest.raises(ValueError, match="query mode"):
        dataset.load_query(0, "box")


def test_missing_image_is_error_naming_flag(tmp_path):
    root = _make_dataset(tmp_path, present=("a", "c"))
    with pytest.raises(FileNotFoundError, match="--restrict_to_present"):
        load_dataset(root, "tiny")


def test_restrict_to_present_remaps_indices(tmp_path):
    root = _make_dataset(tmp_path, present=("a", "c"))
    dataset = load_dataset(root, "tiny", restrict_to_present=True)
    assert dataset.image_names == ("a", "c")
    assert dataset.query_names == ("a", "c")
    # Query "a": positive b is gone, junk a is now index 0.
    assert dataset.queries[0]["ok"].size == 0
    np.testing.assert_array_equal(dataset.queries[0]["junk"], [0])
    # Query "c": positives a (0) and b (gone); junk c is now index 1.
    np.testing.assert_array_equal(dataset.queries[1]["ok"], [0])
    np.testing.assert_array_equal(dataset.queries[1]["junk"], [1])


def test_unknown_dataset_lists_available(tmp_path):
    root = _make_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="available: \\['tiny'\\]"):
        load_dataset(root, "oxford5k")


def test_resolve_data_root_needs_flag_or_env(monkeypatch):
    monkeypatch.delenv("PIRE_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match="PIRE_DATA_ROOT"):
        resolve_data_root(None)


def test_oxford5k_restricted_to_ten_photos(data_root):
    require_file(data_root, "oxford5k", "gnd_oxford5k.pkl")
    dataset = load_dataset(data_root, "oxford5k", restrict_to_present=True)
    assert len(dataset.image_names) == 10
    assert len(dataset.query_names) == 10
    for query in dataset.queries:
        assert query["ok"].size == 5
    # A perfect ranking (positives first) scores 100 under the official ground truth.
    columns = []
    for query in dataset.queries:
        rest = [index for index in range(10) if index not in set(query["ok"])]
        columns.append(np.concatenate([query["ok"], rest]))
    assert evaluate_ranks(np.stack(columns, axis=1), dataset.ground_truth)["map"] == pytest.approx(100.0)


def test_oxford5k_unrestricted_reports_missing(data_root):
    require_file(data_root, "oxford5k", "gnd_oxford5k.pkl")
    with pytest.raises(FileNotFoundError, match="5053|missing"):
        load_dataset(data_root, "oxford5k")


def test_landmarks48_layout(data_root):
    require_file(data_root, "landmarks48", "gnd_landmarks48.pkl")
    dataset = load_dataset(data_root, "landmarks48")
    assert len(dataset.image_names) == 71
    assert len(dataset.query_names) == 18
    assert dataset.load_database_image(0).dtype == np.uint8


def test_group_queries_every_member(tmp_path):
    import json

    from pire_jax.datasets.group_queries import ground_truth_from_groups

    dataset = load_dataset(_make_dataset(tmp_path), "tiny")
    groups_path = tmp_path / "groups.json"
    groups_path.write_text(json.dumps({"first": ["a", "c"], "second": ["b"]}))
    ground_truth = ground_truth_from_groups(dataset.ground_truth, str(groups_path))
    assert ground_truth.query_names == ("a", "c", "b")
    np.testing.assert_array_equal(ground_truth.queries[0]["ok"], [2])
    np.testing.assert_array_equal(ground_truth.queries[0]["junk"], [0])
    assert ground_truth.queries[2]["ok"].size == 0
    assert ground_truth.queries[1]["bbx"] is None


def test_group_queries_unknown_image(tmp_path):
    import json

    from pire_jax.datasets import GroundTruthError
    from pire_jax.datasets.group_queries import ground_truth_from_groups

    dataset = load_dataset(_make_dataset(tmp_path), "tiny")
    groups_path = tmp_path / "groups.json"
    groups_path.write_text(json.dumps({"first": ["a", "zebra"]}))
    with pytest.raises(GroundTruthError, match="zebra"):
        ground_truth_from_groups(dataset.ground_truth, str(groups_path))
