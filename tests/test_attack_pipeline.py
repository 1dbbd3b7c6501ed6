"""The attack pipeline in process: PIRE over prepared queries into an AdversarialStore, resume, corrupt queries.

Runs the real VGG16-GeM architecture with random weights on the tiny dataset of
`pipeline_fixtures`, with 3 PIRE steps, so the files and records checked here are
the ones a real run writes.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline_fixtures
from pire_jax import atomic_io, images
from pire_jax.attacks.pire_config import tuned_config
from pire_jax.datasets import load_dataset
from pire_jax.models import load_network
from pire_jax.pipeline import evaluate_queries
from pire_jax.pipeline.adversarial_store import AdversarialStore, RunConfigMismatchError
from pire_jax.pipeline.pire_queries import attack_queries_with_pire
from pire_jax.pipeline.query_preparation import prepare_queries, snap_to_multiple
from pire_jax.retrieval import make_system

CONFIG = tuned_config(steps=3, save_steps=(1, 3))
OUTPUT_RULE = "times10"
SEED = 0
BATCH_SIZE = 4
DATASET = "tiny_corrupt"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    return load_network(pipeline_fixtures.tiny_network_file(tmp_path_factory))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = pipeline_fixtures.write_tiny_dataset(tmp_path_factory.mktemp("data"), DATASET, with_corrupt_query=True)
    return load_dataset(root, DATASET)


@pytest.fixture(scope="module")
def prepared(dataset):
    return prepare_queries(dataset, "bb", 48)


@pytest.fixture(scope="module")
def queries(prepared):
    return prepared[0]


def _attack(network, queries, output_dir, seed=SEED):
    store = AdversarialStore(str(output_dir), CONFIG.save_steps, "png")
    outcome = attack_queries_with_pire(
        network.apply, network.input_convention, network.params, queries, CONFIG, store, OUTPUT_RULE, seed, BATCH_SIZE
    )
    return store, outcome


@pytest.fixture(scope="module")
def first_run(network, queries, tmp_path_factory):
    """Attack every query once. Tests that change files work on copies of this folder."""
    return _attack(network, queries, tmp_path_factory.mktemp("run_seed0"))


def _file_bytes(store, queries):
    return {
        (query.name, step): Path(store.image_path(query.name, step)).read_bytes()
        for query in queries
        for step in store.steps
    }


def _mtimes(folder):
    stamps = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            stamps[path] = os.stat(path).st_mtime_ns
    return stamps


def _copy_run(store, destination):
    shutil.copytree(store.output_dir, destination)
    return AdversarialStore(str(destination), store.steps, store.save_format)


# Query preparation.


def test_prepare_reports_corrupt_query_by_name(prepared):
    _, failures = prepared
    assert [failure["query"] for failure in failures] == [pipeline_fixtures.CORRUPT_QUERY]


def test_prepare_error_names_the_file(prepared):
    _, failures = prepared
    assert f"{pipeline_fixtures.CORRUPT_QUERY}.jpg" in failures[0]["error"]


def test_prepare_keeps_other_queries(queries):
    assert [query.name for query in queries] == pipeline_fixtures.query_names(with_corrupt_query=False)


def test_prepare_keeps_dataset_indices(queries):
    # The corrupt query is second in the dataset, so the valid ones keep indices 0, 2, 3.
    assert [query.index for query in queries] == [0, 2, 3]


def test_prepare_crops_to_box(queries):
    for query in queries:
        assert query.image.shape == pipeline_fixtures.BB_QUERY_SHAPE


# PIRE output files.


def test_pire_attacks_every_query(first_run, queries):
    _, outcome = first_run
    assert outcome["attacked"] == [query.name for query in queries]
    assert outcome["skipped"] == []


def test_pire_png_matches_query_shape(first_run, queries):
    store, _ = first_run
    for query in queries:
        for step in CONFIG.save_steps:
            path = store.image_path(query.name, step)
            with Image.open(path) as image:
                assert image.format == "PNG"
                assert image.mode == "RGB"
            adversarial = images.load_image(path)
            assert adversarial.dtype == np.uint8
            assert adversarial.shape == query.image.shape


def test_pire_images_differ_from_originals(first_run, queries):
    store, _ = first_run
    for query in queries:
        for step in CONFIG.save_steps:
            adversarial = images.load_image(store.image_path(query.name, step))
            assert np.any(adversarial != query.image), f"{query.name} after {step} steps is unchanged"


def test_pire_change_within_times10_bound(first_run, queries):
    store, _ = first_run
    # times10 saves round(x + 10 v) with |v| <= eps per channel, so rounding adds at most 0.5.
    bound = 10.0 * np.asarray(CONFIG.eps) + 0.5
    for query in queries:
        for step in CONFIG.save_steps:
            adversarial = images.load_image(store.image_path(query.name, step))
            change = np.abs(adversarial.astype(np.int16) - query.image.astype(np.int16))
            for channel in range(3):
                assert change[..., channel].max() <= bound[channel], f"{query.name}, step {step}, channel {channel}"


def test_pire_times10_magnifies_beyond_eps(first_run, queries):
    store, _ = first_run
    for query in queries:
        adversarial = images.load_image(store.image_path(query.name, store.final_step))
        change = np.abs(adversarial.astype(np.int16) - query.image.astype(np.int16))
        assert change.max() > 2.0 * max(CONFIG.eps)


def test_pire_snapshots_in_documented_folders(first_run, queries):
    store, _ = first_run
    for query in queries:
        assert os.path.isfile(os.path.join(store.output_dir, "T1", "jpg", f"{query.name}.png"))
        assert os.path.isfile(os.path.join(store.output_dir, "jpg", f"{query.name}.png"))
        assert not os.path.exists(os.path.join(store.output_dir, "T3"))


def test_pire_snapshots_differ_between_steps(first_run, queries):
    store, _ = first_run
    for query in queries:
        early = images.load_image(store.image_path(query.name, 1))
        final = images.load_image(store.image_path(query.name, 3))
        assert np.any(early != final), query.name


def test_pire_record_lists_every_step(first_run, queries):
    store, _ = first_run
    for query in queries:
        with open(os.path.join(store.output_dir, "finished", f"{query.name}.json"), encoding="utf-8") as stream:
            record = json.load(stream)
        assert record["query"] == query.name
        assert record["shape"] == list(query.image.shape)
        assert sorted(record["steps"]) == ["1", "3"]


def test_pire_objective_grows_over_steps(first_run, queries):
    store, _ = first_run
    for query in queries:
        steps = store.finished_record(query.name)["steps"]
        assert steps["3"]["objective"] > steps["1"]["objective"], query.name


def test_pire_skips_corrupt_query_files(first_run):
    store, _ = first_run
    assert not os.path.exists(store.image_path(pipeline_fixtures.CORRUPT_QUERY, store.final_step))


def test_same_seed_bit_identical_files(first_run, network, queries, tmp_path):
    store, _ = first_run
    again, _ = _attack(network, queries, tmp_path / "again")
    assert _file_bytes(again, queries) == _file_bytes(store, queries)


def test_other_seed_changes_every_file(first_run, network, queries, tmp_path):
    store, _ = first_run
    other, _ = _attack(network, queries, tmp_path / "seed1", seed=1)
    first_files, other_files = _file_bytes(store, queries), _file_bytes(other, queries)
    for key, content in first_files.items():
        assert other_files[key] != content, key


# Resume.


def test_resume_skips_finished_queries(first_run, network, queries):
    store, _ = first_run
    before = _mtimes(store.output_dir)
    _, outcome = _attack(network, queries, store.output_dir)
    assert outcome["attacked"] == []
    assert outcome["skipped"] == [query.name for query in queries]
    assert _mtimes(store.output_dir) == before


def test_resume_reattacks_query_without_record(first_run, network, queries, tmp_path):
    # A kill between the last image and the record leaves the images without a record.
    store = _copy_run(first_run[0], tmp_path / "run")
    killed = queries[1].name
    os.remove(os.path.join(store.output_dir, "finished", f"{killed}.json"))
    assert not store.is_finished(killed)

    _, outcome = _attack(network, queries, store.output_dir)
    assert outcome["attacked"] == [killed]
    assert outcome["skipped"] == [queries[0].name, queries[2].name]
    assert store.is_finished(killed)


def _leave_partial_file(destination, complete: bytes) -> str:
    """Leave what a kill inside `atomic_io` leaves: half of the content under its temporary name."""
    folder, name = os.path.split(destination)
    stem, suffix = os.path.splitext(name)
    handle, path = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{suffix}", dir=folder)
    with os.fdopen(handle, "wb") as stream:
        stream.write(complete[: len(complete) // 2])
    return path


def test_resume_ignores_partial_files(first_run, network, queries, tmp_path):
    store = _copy_run(first_run[0], tmp_path / "run")
    killed = queries[2].name
    image_path = store.image_path(killed, store.final_step)
    record_path = os.path.join(store.output_dir, "finished", f"{killed}.json")
    partial_image = _leave_partial_file(image_path, Path(image_path).read_bytes())
    partial_record = _leave_partial_file(record_path, Path(record_path).read_bytes())
    os.remove(image_path)
    os.remove(record_path)
    assert atomic_io.is_temporary_file(os.path.basename(partial_image))
    assert atomic_io.is_temporary_file(os.path.basename(partial_record))
    assert not store.is_finished(killed)

    _, outcome = _attack(network, queries, store.output_dir)
    assert outcome["attacked"] == [killed]
    adversarial = images.load_image(image_path)
    assert adversarial.shape == queries[2].image.shape


def test_run_config_stored_then_accepted(tmp_path):
    store = AdversarialStore(str(tmp_path), (1, 3), "png")
    settings = {"seed": 0, "pire": {"steps": 3, "eps": (2.3, 2.3, 2.3)}}
    store.check_run_config(settings)
    assert os.path.isfile(tmp_path / "run_config.json")
    AdversarialStore(str(tmp_path), (1, 3), "png").check_run_config(settings)


@pytest.mark.parametrize(
    "changed, name",
    [
        ({"seed": 1}, "seed"),
        ({"pire": {"steps": 3, "eps": (4.0, 4.0, 4.0)}}, "pire.eps"),
        ({"output": "refined"}, "output"),
    ],
)
def test_run_config_mismatch_names_setting(tmp_path, changed, name):
    settings = {"seed": 0, "pire": {"steps": 3, "eps": (2.3, 2.3, 2.3)}}
    AdversarialStore(str(tmp_path), (1, 3), "png").check_run_config(settings)
    with pytest.raises(RunConfigMismatchError, match=rf"changed: \['{name}'\]"):
        AdversarialStore(str(tmp_path), (1, 3), "png").check_run_config(settings | changed)


def test_run_config_mismatch_names_nested_setting(tmp_path):
    settings = {"seed": 0, "pire": {"steps": 3, "eps": (2.3, 2.3, 2.3)}}
    AdversarialStore(str(tmp_path), (1, 3), "png").check_run_config(settings)
    changed = settings | {"pire": {"steps": 3, "eps": (4.0, 4.0, 4.0)}}
    with pytest.raises(RunConfigMismatchError, match=r"pire\.eps"):
        AdversarialStore(str(tmp_path), (1, 3), "png").check_run_config(changed)


# Evaluation of a run with a corrupt query.


def test_evaluation_covers_finished_queries(first_run, dataset, queries):
    store, _ = first_run
    system = make_system("cedd")
    database = system.describe_database([dataset.load_database_image(index) for index in range(len(dataset.image_names))])
    evaluation = evaluate_queries.evaluate_attack_run(
        dataset, queries, store, {1: "T1", 3: "T3"}, {"cedd": system}, {"cedd": database}
    )
    assert evaluation["query_names"] == [query.name for query in queries]
    assert len(evaluation["systems"]["cedd"]["original"]["map_per_query"]) == len(queries)
    # Each group is one pattern, so CEDD ranks a query's two other members first.
    assert evaluation["systems"]["cedd"]["original"]["map"] == pytest.approx(100.0)
    assert 0.0 < evaluation["image_quality"]["T3"]["ssim_mean"] < 1.0


def test_snap_to_multiple_shapes():
    image = np.zeros((171, 256, 3), np.uint8)
    assert snap_to_multiple(image, 32).shape == (160, 256, 3)
    assert snap_to_multiple(image, 0) is image
    assert snap_to_multiple(np.zeros((10, 20, 3), np.uint8), 32).shape == (32, 32, 3)
