"""Ground-truth pickles (safe loading, both protocols, malformed files) and the text ground truth."""

import os
import pickle

import numpy as np
import pytest

from conftest import require_file
from pire_jax.datasets import (
    GroundTruthError,
    load_ground_truth_pickle,
    load_text_ground_truth,
    parse_ground_truth,
)


class _RunsCode:
    """Unpickling this calls os.system, which a ground-truth loader must never do."""

    def __reduce__(self):
        return (os.system, ("echo attacked > /dev/null",))


def _write_pickle(path, value):
    with open(path, "wb") as stream:
        pickle.dump(value, stream)
    return str(path)


def test_pickle_revisited_with_numpy_arrays(tmp_path):
    raw = {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["a"],
        "gnd": [{"bbx": np.array([1.0, 2.0, 30.0, 40.0]), "easy": np.array([1]), "hard": np.array([2, 3]), "junk": np.array([0])}],
    }
    ground_truth = load_ground_truth_pickle(_write_pickle(tmp_path / "gnd_r.pkl", raw))
    assert ground_truth.protocol == "revisited"
    assert ground_truth.queries[0]["bbx"] == (1.0, 2.0, 30.0, 40.0)
    np.testing.assert_array_equal(ground_truth.queries[0]["hard"], [2, 3])
    assert ground_truth.queries[0]["easy"].dtype == np.int64


def test_pickle_old_protocol_lists(tmp_path):
    raw = {"imlist": ["a", "b"], "qimlist": ["a"], "gnd": [{"bbx": [0, 0, 5, 5], "ok": [1], "junk": [0]}]}
    ground_truth = load_ground_truth_pickle(_write_pickle(tmp_path / "gnd_o.pkl", raw))
    assert ground_truth.protocol == "old"
    np.testing.assert_array_equal(ground_truth.queries[0]["ok"], [1])


def test_pickle_that_runs_code_is_rejected(tmp_path):
    raw = {"imlist": ["a"], "qimlist": ["a"], "gnd": [{"bbx": None, "ok": [0], "junk": _RunsCode()}]}
    path = _write_pickle(tmp_path / "gnd_evil.pkl", raw)
    with pytest.raises(GroundTruthError, match="posix.system|os.system|Refusing"):
        load_ground_truth_pickle(path)


def test_pickle_truncated_names_file(tmp_path):
    raw = {"imlist": ["a", "b"], "qimlist": ["a"], "gnd": [{"bbx": None, "ok": [1], "junk": []}]}
    path = tmp_path / "gnd_cut.pkl"
    data = pickle.dumps(raw)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GroundTruthError, match="gnd_cut.pkl"):
        load_ground_truth_pickle(str(path))


def test_pickle_missing_file():
    with pytest.raises(FileNotFoundError, match="--data_root"):
        load_ground_truth_pickle("/nonexistent/gnd_x.pkl")


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 2], "not a dict"),
        ({"imlist": ["a"], "qimlist": ["a"]}, "'gnd' is missing"),
        ({"imlist": ["a"], "qimlist": ["a", "b"], "gnd": [{"ok": []}]}, "one entry per query"),
        ({"imlist": ["a"], "qimlist": ["a"], "gnd": [{"ok": [3]}]}, "outside the 1 database images"),
        ({"imlist": ["a"], "qimlist": ["a"], "gnd": [{"ok": [0.5]}]}, "non-integer"),
        ({"imlist": ["a"], "qimlist": ["a"], "gnd": [{"bbx": [5, 5, 1, 1], "ok": [0]}]}, "x2 > x1"),
        ({"imlist": ["a"], "qimlist": ["a"], "gnd": [{"positives": [0]}]}, "neither 'ok'"),
        ({"imlist": [1], "qimlist": ["a"], "gnd": [{"ok": [0]}]}, "'imlist' is not a list of image names"),
    ],
)
def test_parse_malformed_ground_truth(raw, message):
    with pytest.raises(GroundTruthError, match=message):
        parse_ground_truth(raw, source="test.pkl")


def _write_text_query(folder, query_id, line, good, ok, junk):
    (folder / f"{query_id}_query.txt").write_text(line + "\n")
    (folder / f"{query_id}_good.txt").write_text("".join(f"{name}\n" for name in good))
    (folder / f"{query_id}_ok.txt").write_text("".join(f"{name}\n" for name in ok))
    (folder / f"{query_id}_junk.txt").write_text("".join(f"{name}\n" for name in junk))


def test_text_ground_truth_oxford_prefix(tmp_path):
    _write_text_query(tmp_path, "tower_1", "oxc1_tower_000001 1.5 2 30 40.5", ["tower_000002"], ["tower_000003"], ["other_1"])
    ground_truth = load_text_ground_truth(tmp_path, ["other_1", "tower_000001", "tower_000002", "tower_000003"])
    assert ground_truth.query_names == ("tower_000001",)
    assert ground_truth.queries[0]["bbx"] == (1.5, 2.0, 30.0, 40.5)
    np.testing.assert_array_equal(sorted(ground_truth.queries[0]["ok"]), [2, 3])
    np.testing.assert_array_equal(ground_truth.queries[0]["junk"], [0])


def test_text_ground_truth_malformed_query_line(tmp_path):
    _write_text_query(tmp_path, "tower_1", "tower_000001 1 2 3", [], [], [])
    with pytest.raises(GroundTruthError, match="tower_1_query.txt"):
        load_text_ground_truth(tmp_path)


def test_text_ground_truth_missing_list(tmp_path):
    _write_text_query(tmp_path, "tower_1", "tower_000001 1 2 3 4", [], [], [])
    os.remove(tmp_path / "tower_1_ok.txt")
    with pytest.raises(FileNotFoundError, match="tower_1_ok.txt"):
        load_text_ground_truth(tmp_path)


@pytest.mark.parametrize("name, folder", [("oxford5k", "gt_files_170407"), ("paris6k", "paris_120310")])
def test_text_ground_truth_equals_official_pickle(data_root, name, folder):
    pickled = load_ground_truth_pickle(require_file(data_root, name, f"gnd_{name}.pkl"))
    text = load_text_ground_truth(require_file(data_root, name, folder), pickled.image_names)
    assert len(pickled.query_names) == 55
    assert text.query_names == pickled.query_names
    for from_text, from_pickle in zip(text.queries, pickled.queries):
        assert set(from_text["ok"]) == set(from_pickle["ok"])
        assert set(from_text["junk"]) == set(from_pickle["junk"])
        np.testing.assert_allclose(from_text["bbx"], from_pickle["bbx"])


def test_official_oxford_pickle_sizes(data_root):
    ground_truth = load_ground_truth_pickle(require_file(data_root, "oxford5k", "gnd_oxford5k.pkl"))
    assert len(ground_truth.image_names) == 5063
    assert ground_truth.protocol == "old"
