"""Evaluate a retrieval system on a dataset's queries: mAP (and Easy/Medium/Hard for the revisited protocol).

Example:
  python -m experiments.eval_retrieval --data_root ../shared/data --dataset landmarks48 \
      --system neural --weights weights/vgg16_gem_keras.msgpack --image_size 512 \
      --query_mode wi --output_dir runs/eval_landmarks48

Writes `results.json` (mAP in percent, per-query AP, every flag) and `results.md`.
"""

import dataclasses
import os
import time

from absl import app, flags, logging

from experiments import common_flags
from pire_jax import atomic_io, images
from pire_jax.datasets import group_queries
from pire_jax.evaluation import evaluate_ranks
from pire_jax.pipeline import evaluate_queries
from pire_jax.retrieval import available_systems, feature_cache, make_system

flags.DEFINE_string("system", "neural", "Retrieval system: neural, sift_he, bow, cedd or gist.")
flags.DEFINE_string("output_dir", None, "Folder for results.json and results.md.", required=True)
flags.DEFINE_boolean(
    "group_queries", False, "Query with every member of each group in the dataset's groups.json (whole images) "
    "instead of the ground-truth pickle's queries; e.g. all 48 landmark photos of landmarks48.",
)

FLAGS = flags.FLAGS


def _markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [
        f"# Retrieval: {settings['system']} on {settings['dataset']} ({settings['query_mode'].upper()} queries)",
        "",
        f"{results['n_queries']} queries, {results['n_database']} database images, {results['protocol']} protocol.",
        "",
    ]
    if results["failed_queries"]:
        lines += ["Queries left out because their image could not be read: "
                  + ", ".join(failure["query"] for failure in results["failed_queries"]), ""]
    if results["protocol"] == "revisited":
        lines += ["| Easy | Medium | Hard |", "|---|---|---|"]
        lines.append(f"| {results['easy']['map']:.2f} | {results['medium']['map']:.2f} | {results['hard']['map']:.2f} |")
    else:
        lines += ["| mAP (%) | " + " | ".join(f"mP@{k}" for k in results["mp@k"]) + " |", "|---|" + "---|" * len(results["mp@k"])]
        lines.append(f"| {results['map']:.2f} | " + " | ".join(f"{value:.2f}" for value in results["mp@k"].values()) + " |")
    lines += ["", "| query | AP (%) |", "|---|---|"]
    for name, average_precision in zip(results["query_names"], results["map_per_query"]):
        lines.append(f"| {name} | {'-' if average_precision is None else f'{average_precision:.2f}'} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if FLAGS.system not in available_systems():
        raise app.UsageError(f"Unknown --system {FLAGS.system}; expected one of {available_systems()}.")
    with common_flags.exit_on_input_error():
        dataset = common_flags.open_dataset()
    if FLAGS.group_queries:
        groups = group_queries.ground_truth_from_groups(
            dataset.ground_truth, os.path.join(dataset.folder, group_queries.GROUPS_FILE)
        )
        dataset = dataclasses.replace(dataset, ground_truth=groups)
    logging.info(
        "Evaluating %s on %s: %d queries (%s), %d database images.",
        FLAGS.system, dataset.name, len(dataset.query_names), FLAGS.query_mode, len(dataset.image_names),
    )
    with common_flags.exit_on_input_error():
        system = make_system(FLAGS.system, **common_flags.system_options(FLAGS.system))

    start = time.perf_counter()
    database = feature_cache.database_descriptors_for_dataset(system, dataset, common_flags.cache_dir())
    database_seconds = time.perf_counter() - start

    start = time.perf_counter()
    queries, evaluated, failures = [], [], []
    for index, name in enumerate(dataset.query_names):
        try:
            image = dataset.load_query(index, "wi")
        except (FileNotFoundError, images.ImageReadError) as error:
            logging.error("Skipping query %s: %s", name, error)
            failures.append({"query": name, "error": str(error)})
            continue
        box = dataset.query_box(index) if FLAGS.query_mode == "bb" else None
        queries.append(system.describe_query(image, box))
        evaluated.append(index)
    if not queries:
        raise RuntimeError(f"No query of {dataset.name} could be read; see the errors above.")
    ground_truth = evaluate_queries.subset_ground_truth(dataset.ground_truth, evaluated)
    ranks = system.rank(queries, database)
    query_seconds = time.perf_counter() - start

    results = evaluate_ranks(ranks, ground_truth)
    results.update(
        {
            "settings": {
                "system": FLAGS.system,
                "dataset": FLAGS.dataset,
                "query_mode": FLAGS.query_mode,
                "restrict_to_present": FLAGS.restrict_to_present,
                "group_queries": FLAGS.group_queries,
            },
            "system_settings": system.settings(),
            "protocol": dataset.protocol,
            "n_queries": len(ground_truth.query_names),
            "failed_queries": failures,
            "n_database": len(dataset.image_names),
            "query_names": list(ground_truth.query_names),
            "seconds_database": round(database_seconds, 3),
            "seconds_queries": round(query_seconds, 3),
            "flags": common_flags.project_flags(),
        }
    )
    atomic_io.write_json_atomic(os.path.join(FLAGS.output_dir, "results.json"), results)
    atomic_io.write_text_atomic(os.path.join(FLAGS.output_dir, "results.md"), _markdown(results))
    logging.info("%s on %s (%s): mAP %.2f%%. Results in %s.", FLAGS.system, dataset.name, FLAGS.query_mode,
                 results["map"], FLAGS.output_dir)
    print(_markdown(results))


if __name__ == "__main__":
    app.run(main)
