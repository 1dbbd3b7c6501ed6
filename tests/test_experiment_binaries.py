"""The experiment binaries end to end, each run as `python -m ...` in a subprocess, as a user runs them.

The tiny dataset and random VGG16-GeM file of `pipeline_fixtures` keep each run to
seconds. The last test converts the real Keras VGG16 and evaluates it on the
10-photo oxford5k; it runs when PIRE_DATA_ROOT and PIRE_WEIGHTS_DIR are set.
"""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline_fixtures
from conftest import require_file
from pire_jax.evaluation import average_precision

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARY_TIMEOUT_SECONDS = 600
VALID_QUERIES = pipeline_fixtures.query_names(with_corrupt_query=False)


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """Build the environment of the subprocesses, which import this checkout and keep their caches in the session's temporary folder."""
    variables = dict(os.environ)
    variables.pop("PIRE_WEIGHTS_FILE", None)
    variables["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), variables.get("PYTHONPATH")]))
    # Shared by every run of the session, so later runs can reuse compiled programs.
    variables["PIRE_JAX_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "jax_cache")
    variables["MPLCONFIGDIR"] = str(tmp_path_factory.getbasetemp() / "matplotlib")
    return variables


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, environment):
    """Write the datasets "tiny" and "tiny_corrupt", and return their data root with the network file and the environment."""
    root = tmp_path_factory.mktemp("binaries")
    data_root = root / "data"
    pipeline_fixtures.write_tiny_dataset(data_root, "tiny")
    pipeline_fixtures.write_tiny_dataset(data_root, "tiny_corrupt", with_corrupt_query=True)
    return {
        "root": root,
        "data_root": str(data_root),
        "weights": pipeline_fixtures.tiny_network_file(tmp_path_factory),
        "cache_dir": str(root / "feature_cache"),
        "environment": environment,
    }


def run_binary(module, arguments, environment, cwd=REPO_ROOT):
    """Run `python -m module arguments` and return the completed process, which is killed at the timeout."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BINARY_TIMEOUT_SECONDS,
        check=False,
    )


def _failure_message(process):
    return f"exit code {process.returncode}; stderr ends with:\n{process.stderr[-3000:]}"


def _load_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _attack_output_mtimes(output_dir):
    """Return the modification times of the adversarial queries, the records and the run settings."""
    stamps = {}
    for folder in ("jpg", os.path.join("T1", "jpg"), "finished"):
        for name in os.listdir(os.path.join(output_dir, folder)):
            path = os.path.join(output_dir, folder, name)
            stamps[path] = os.stat(path).st_mtime_ns
    config_path = os.path.join(output_dir, "run_config.json")
    stamps[config_path] = os.stat(config_path).st_mtime_ns
    return stamps


def _pire_arguments(workspace, output_dir, *extra):
    return [
        "--data_root", workspace["data_root"], "--dataset", "tiny_corrupt",
        "--weights", workspace["weights"], "--image_size", "48",
        "--preset", "tuned", "--steps", "3", "--save_steps", "1,3",
        "--cache_dir", workspace["cache_dir"], "--systems", "neural",
        "--output_dir", str(output_dir), *extra,
    ]


@pytest.fixture(scope="module")
def pire_run(workspace):
    """Run attack_queries with PIRE on the dataset with a corrupt query, and read its outputs before any rerun."""
    output_dir = workspace["root"] / "pire_run"
    process = run_binary("experiments.attack_queries", _pire_arguments(workspace, output_dir), workspace["environment"])
    assert process.returncode == 0, _failure_message(process)
    return {
        "process": process,
        "output_dir": str(output_dir),
        "results": _load_json(output_dir / "results.json"),
        "mtimes": _attack_output_mtimes(str(output_dir)),
    }


@pytest.fixture(scope="module")
def pire_rerun(workspace, pire_run):
    process = run_binary(
        "experiments.attack_queries", _pire_arguments(workspace, pire_run["output_dir"]), workspace["environment"]
    )
    return {"process": process, "mtimes": _attack_output_mtimes(pire_run["output_dir"])}


# attack_queries with PIRE.


def test_pire_run_exit_code(pire_run):
    assert pire_run["process"].returncode == 0


def test_pire_run_map_in_percent(pire_run):
    results = pire_run["results"]
    for key in ("map_original", "map_adversarial"):
        assert 0.0 <= results[key] <= 100.0, key


def test_pire_run_per_query_ap(pire_run):
    results = pire_run["results"]
    assert results["query_names"] == VALID_QUERIES
    for key in ("ap_original_per_query", "ap_adversarial_per_query"):
        assert len(results[key]) == len(VALID_QUERIES), key
        for average_precision_percent in results[key]:
            assert 0.0 <= average_precision_percent <= 100.0, key


def test_pire_run_ssim_range(pire_run):
    results = pire_run["results"]
    assert 0.0 < results["ssim_mean"] <= 1.0
    for label in ("T1", "T3"):
        for value in results["image_quality"][label]["ssim_per_query"]:
            assert 0.0 < value <= 1.0, label


def test_pire_run_step_entries(pire_run):
    results = pire_run["results"]
    assert results["modified_sets"] == ["T1", "T3"]
    assert sorted(results["systems"]["neural"]) == ["T1", "T3", "original"]
    assert sorted(results["image_quality"]) == ["T1", "T3"]
    assert results["map_adversarial"] == results["systems"]["neural"]["T3"]["map"]


def test_pire_run_settings(pire_run, workspace):
    settings = pire_run["results"]["settings"]
    assert settings["attack"] == "pire"
    assert settings["seed"] == 0
    assert settings["image_size"] == 48
    assert settings["output"] == "refined"
    assert settings["pire"]["steps"] == 3
    assert settings["pire"]["save_steps"] == [1, 3]
    assert settings["weights"] == os.path.abspath(workspace["weights"])


def test_pire_run_records_own_flags(pire_run):
    recorded = pire_run["results"]["flags"]
    assert "--preset=tuned" in recorded  # attack_queries' own flag
    assert "--image_size=48" in recorded  # a flag of experiments.common_flags
    assert "--codebook_size=20000" in recorded  # a default of experiments.classical_flags
    assert not [line for line in recorded if line.startswith("--test_")]  # absltest's flags
    assert not [line for line in recorded if "chex" in line]


def test_pire_run_reports_corrupt_query(pire_run):
    results = pire_run["results"]
    assert [failure["query"] for failure in results["failed_queries"]] == [pipeline_fixtures.CORRUPT_QUERY]
    assert results["n_queries"] == len(VALID_QUERIES) + 1
    assert results["n_queries_evaluated"] == len(VALID_QUERIES)


def test_pire_run_report_files(pire_run):
    output_dir = pire_run["output_dir"]
    with open(os.path.join(output_dir, "results.md"), encoding="utf-8") as stream:
        markdown = stream.read()
    assert "| T3 |" in markdown
    assert pipeline_fixtures.CORRUPT_QUERY in markdown
    with Image.open(os.path.join(output_dir, "examples.png")) as figure:
        assert figure.format == "PNG"


def test_pire_run_adversarial_files(pire_run):
    output_dir = pire_run["output_dir"]
    for query in VALID_QUERIES:
        for folder in ("jpg", os.path.join("T1", "jpg")):
            path = os.path.join(output_dir, folder, f"{query}.png")
            assert os.path.isfile(path), path
            with Image.open(path) as image:
                assert image.size == (pipeline_fixtures.BB_QUERY_SHAPE[1], pipeline_fixtures.BB_QUERY_SHAPE[0])
    assert sorted(os.listdir(os.path.join(output_dir, "jpg"))) == [f"{query}.png" for query in VALID_QUERIES]


def test_rerun_exit_code(pire_rerun):
    assert pire_rerun["process"].returncode == 0, _failure_message(pire_rerun["process"])


def test_rerun_logs_resume(pire_rerun):
    stderr = pire_rerun["process"].stderr
    assert f"Resuming: {len(VALID_QUERIES)} queries already finished, 0 to attack." in stderr
    assert "Attacked " not in stderr


def test_rerun_leaves_files_untouched(pire_run, pire_rerun):
    assert pire_rerun["mtimes"] == pire_run["mtimes"]


def test_rerun_other_seed_rejected(workspace, pire_run, pire_rerun):
    del pire_rerun  # Runs after the resume checks, which need the folder as the first run left it.
    arguments = _pire_arguments(workspace, pire_run["output_dir"], "--seed", "1")
    process = run_binary("experiments.attack_queries", arguments, workspace["environment"])
    assert process.returncode != 0
    assert "RunConfigMismatchError" in process.stderr
    assert "changed: ['seed']" in process.stderr


def test_missing_weights_one_line_error(workspace, tmp_path):
    missing = tmp_path / "missing.msgpack"
    arguments = _pire_arguments(workspace, tmp_path / "run")
    arguments[arguments.index("--weights") + 1] = str(missing)
    process = run_binary("experiments.attack_queries", arguments, workspace["environment"])
    assert process.returncode == 1
    assert f"Invalid input: Network file not found: {missing}." in process.stderr
    assert "--weights" in process.stderr.splitlines()[-1]
    assert "Traceback" not in process.stderr


def test_missing_dataset_one_line_error(workspace, tmp_path):
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    arguments = _pire_arguments(workspace, tmp_path / "run")
    arguments[arguments.index("--data_root") + 1] = str(empty_root)
    process = run_binary("experiments.attack_queries", arguments, workspace["environment"])
    assert process.returncode == 1
    assert "Invalid input: Dataset 'tiny_corrupt' not found" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "run").exists()


def test_rerun_without_examples(workspace, pire_run, tmp_path):
    # A resumed copy of the first run, so nothing is attacked again.
    output_dir = tmp_path / "no_examples"
    shutil.copytree(pire_run["output_dir"], output_dir)
    os.remove(output_dir / "examples.png")
    arguments = _pire_arguments(workspace, output_dir, "--examples", "0")
    process = run_binary("experiments.attack_queries", arguments, workspace["environment"])
    assert process.returncode == 0, _failure_message(process)
    assert not os.path.exists(output_dir / "examples.png")


# attack_queries with a keypoint attack, without any network.


@pytest.fixture(scope="module")
def ls_run(workspace):
    """Local smoothing evaluated by CEDD, run outside the repository with no --weights and no $PIRE_WEIGHTS_FILE."""
    output_dir = workspace["root"] / "ls_run"
    arguments = [
        "--data_root", workspace["data_root"], "--dataset", "tiny_corrupt", "--image_size", "48",
        "--attack", "ls", "--systems", "cedd", "--cache_dir", workspace["cache_dir"], "--output_dir", str(output_dir),
    ]
    process = run_binary("experiments.attack_queries", arguments, workspace["environment"], cwd=workspace["root"])
    assert process.returncode == 0, _failure_message(process)
    return {"output_dir": str(output_dir), "results": _load_json(output_dir / "results.json")}


def test_ls_run_results(ls_run):
    results = ls_run["results"]
    assert results["modified_sets"] == ["ls"]
    assert results["query_names"] == VALID_QUERIES
    assert 0.0 <= results["map_adversarial"] <= 100.0
    assert 0.0 < results["ssim_mean"] <= 1.0
    assert "weights" not in results["settings"]


def test_ls_run_cedd_finds_groups(ls_run):
    # Each group is one pattern, so CEDD ranks a query's two other members first.
    assert ls_run["results"]["map_original"] == pytest.approx(100.0)


def test_ls_run_reports_corrupt_query(ls_run):
    failures = ls_run["results"]["failed_queries"]
    assert [failure["query"] for failure in failures] == [pipeline_fixtures.CORRUPT_QUERY]


def test_ls_run_adversarial_files(ls_run):
    folder = os.path.join(ls_run["output_dir"], "jpg")
    assert sorted(os.listdir(folder)) == [f"{query}.png" for query in VALID_QUERIES]


def test_ls_run_markdown_without_none(ls_run):
    with open(os.path.join(ls_run["output_dir"], "results.md"), encoding="utf-8") as stream:
        assert "None" not in stream.read()


# eval_retrieval.


@pytest.fixture(scope="module", params=["neural", "cedd"])
def evaluation(request, workspace):
    system = request.param
    output_dir = workspace["root"] / f"eval_{system}"
    arguments = [
        "--data_root", workspace["data_root"], "--dataset", "tiny", "--system", system,
        "--weights", workspace["weights"], "--image_size", "48",
        "--cache_dir", workspace["cache_dir"], "--output_dir", str(output_dir),
    ]
    process = run_binary("experiments.eval_retrieval", arguments, workspace["environment"])
    assert process.returncode == 0, _failure_message(process)
    return {"system": system, "results": _load_json(output_dir / "results.json")}


def test_eval_map_in_percent(evaluation):
    assert 0.0 <= evaluation["results"]["map"] <= 100.0


def test_eval_one_ap_per_query(evaluation):
    results = evaluation["results"]
    assert results["query_names"] == VALID_QUERIES
    assert len(results["map_per_query"]) == len(VALID_QUERIES)
    for average_precision_percent in results["map_per_query"]:
        assert 0.0 <= average_precision_percent <= 100.0


def test_eval_matches_attack_run(evaluation, pire_run, ls_run):
    # attack_queries crops and resizes the queries itself before describing them;
    # eval_retrieval lets the system crop. Both must score the same originals alike.
    run = {"neural": pire_run, "cedd": ls_run}[evaluation["system"]]
    np.testing.assert_allclose(
        evaluation["results"]["map_per_query"], run["results"]["ap_original_per_query"], atol=1e-3
    )


def test_eval_skips_corrupt_query(workspace, tmp_path):
    output_dir = tmp_path / "eval_corrupt"
    arguments = [
        "--data_root", workspace["data_root"], "--dataset", "tiny_corrupt", "--system", "cedd",
        "--cache_dir", workspace["cache_dir"], "--output_dir", str(output_dir),
    ]
    process = run_binary("experiments.eval_retrieval", arguments, workspace["environment"])
    assert process.returncode == 0, _failure_message(process)
    results = _load_json(output_dir / "results.json")
    assert [failure["query"] for failure in results["failed_queries"]] == [pipeline_fixtures.CORRUPT_QUERY]
    assert results["query_names"] == VALID_QUERIES


# Real weights on real photos.


def expected_random_ap(n_images, n_positives):
    """Mean AP (revisitop's trapezoidal rule) over every placement of the positives in a ranking."""
    placements = itertools.combinations(range(n_images), n_positives)
    return float(np.mean([average_precision(np.array(ranks), n_positives) for ranks in placements]))


@pytest.fixture(scope="module")
def real_vgg16_file(data_root, weights_dir, tmp_path_factory, environment):
    onnx_file = require_file(weights_dir, "vgg16_keras_imagenet_conv_base.onnx")
    output = tmp_path_factory.mktemp("real_weights") / "vgg16_gem_keras.msgpack"
    arguments = ["--format", "keras-onnx", "--arch", "vgg16", "--input", onnx_file, "--output", str(output)]
    process = run_binary("weights_conversion", arguments, environment)
    assert process.returncode == 0, _failure_message(process)
    return str(output)


def test_eval_oxford5k_above_chance(data_root, real_vgg16_file, environment, tmp_path):
    require_file(data_root, "oxford5k", "gnd_oxford5k.pkl")
    require_file(data_root, "oxford5k", "jpg")
    arguments = [
        "--data_root", data_root, "--dataset", "oxford5k", "--restrict_to_present", "--query_mode", "bb",
        "--image_size", "256", "--system", "neural", "--weights", real_vgg16_file,
        "--cache_dir", str(tmp_path / "feature_cache"), "--output_dir", str(tmp_path / "eval"),
    ]
    process = run_binary("experiments.eval_retrieval", arguments, environment)
    assert process.returncode == 0, _failure_message(process)
    results = _load_json(tmp_path / "eval" / "results.json")
    assert results["n_database"] == 10
    assert results["n_queries"] == 10

    # Each of the 10 present queries has 5 positives among the 10 photos and no junk,
    # so a random ranking scores about 55.4% mAP. The Keras VGG16 scored 100% with these flags.
    chance = 100.0 * expected_random_ap(10, 5)
    assert chance == pytest.approx(55.36, abs=0.01)
    assert results["map"] >= chance + 30.0
