"""The main job: attack a dataset's queries and measure how much retrieval breaks and how much the images change.

With no flags it runs the tuned PIRE preset with VGG16-GeM on the scikit-image demo
dataset. A paper-style run on real data (see README.md):

  python -m experiments.attack_queries --data_root ../shared/data --dataset landmarks48 \
      --weights weights/vgg16_gem_keras.msgpack --query_mode wi --image_size 256 \
      --preset paper --steps 500 --save_steps 200,500 --output refined \
      --output_dir runs/pire_landmarks48

Outputs under --output_dir: adversarial queries (jpg/, and T<t>/jpg/ for earlier
--save_steps), results.json, results.md and examples.png. A rerun with the same
--output_dir resumes: finished queries are not attacked again.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments import common_flags
from pire_jax import atomic_io, images
from pire_jax.attacks import pire_outputs
from pire_jax.attacks.keypoints import registry
from pire_jax.attacks.pire_config import PRESETS, PireConfig, per_channel
from pire_jax.jax_cache import enable_persistent_compilation_cache
from pire_jax.models import load_network
from pire_jax.pipeline import evaluate_queries, modified_queries, pire_queries, reports
from pire_jax.pipeline.adversarial_store import AdversarialStore
from pire_jax.pipeline.query_preparation import prepare_queries
from pire_jax.retrieval import available_systems, feature_cache, make_system

ATTACKS = ("pire",) + registry.QUERY_MODIFICATIONS

flags.DEFINE_enum("attack", "pire", list(ATTACKS), "Query modification to apply.")
flags.DEFINE_enum("preset", "tuned", ["paper", "tuned", "none"],
                  "PIRE settings: paper (released code: eps 10/255 and lr 1e-4 normalised, T=500), tuned (0.9 of "
                  "that budget, larger step, T=50) or none (only the flags below).")
flags.DEFINE_integer("steps", None, "PIRE iterations T; overrides the preset.")
flags.DEFINE_list("save_steps", None, "Iterations whose adversarial queries are kept, e.g. 200,500 (the last must equal "
                  "--steps); default: only the last.")
flags.DEFINE_list("eps", None, "PIRE L-infinity budget in grey levels (0..255 scale): one value or R,G,B; overrides the preset.")
flags.DEFINE_list("lr", None, "PIRE Adam step size in grey levels: one value or R,G,B; overrides the preset.")
flags.DEFINE_boolean("clip_to_valid_range", None, "Keep x + v inside 0..255 during the attack; overrides the preset.")
flags.DEFINE_float("initial_fraction_of_eps", None,
                   "Draw v0 uniform in [-f * eps, f * eps] (paper: 1); overrides the preset.")
flags.DEFINE_enum("loop", "auto", ["auto", "python", "fori", "scan"], "Form of the PIRE loop (auto: python on CPU).")
flags.DEFINE_enum("output", "refined", list(pire_outputs.OUTPUT_RULES),
                  "How PIRE's v becomes an 8-bit image: times10 (x + 10 v), refined (released p(v)), minimal.")
flags.DEFINE_enum("save_format", "png", ["png", "jpeg"], "Adversarial query file format (png is lossless).")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality for --save_format jpeg.")
flags.DEFINE_integer(
    "shape_multiple", 0, "Resize each query so both sides are multiples of this many pixels (e.g. 32), so that "
    "queries of similar aspect ratio share one compiled shape; 0 keeps the exact size.", lower_bound=0,
)
flags.DEFINE_integer("batch_size", 4, "Maximum number of equal-shape queries attacked at once by PIRE.")
flags.DEFINE_integer("seed", 0, "Seed of the random initial perturbations and of the keypoint attacks.")
flags.DEFINE_string("modification_config", None,
                    "JSON object of settings for a keypoint attack or the Gaussian baseline, e.g. "
                    "'{\"target_ssim\": 0.69}'; unset uses the defaults.")
flags.DEFINE_list("systems", ["neural"], "Retrieval systems that evaluate the queries: neural, sift_he, bow, cedd, gist.")
flags.DEFINE_integer("examples", 4, "Number of queries shown in examples.png; 0 skips the figure.", lower_bound=0)
flags.DEFINE_string("output_dir", None, "Run folder; default runs/<dataset>_<attack>.")

FLAGS = flags.FLAGS


def pire_config_from_flags() -> PireConfig:
    """Start from --preset and apply the explicit flags."""
    steps = FLAGS.steps
    if FLAGS.preset == "none":
        config = PireConfig(steps=steps or 500, save_steps=(steps or 500,))
    else:
        config = PRESETS[FLAGS.preset]() if steps is None else PRESETS[FLAGS.preset](steps=steps)
    save_steps = tuple(int(step) for step in FLAGS.save_steps) if FLAGS.save_steps else (config.steps,)
    changes = {"save_steps": save_steps, "loop": FLAGS.loop}
    if FLAGS.eps:
        changes["eps"] = per_channel([float(value) for value in FLAGS.eps] if len(FLAGS.eps) > 1 else float(FLAGS.eps[0]))
    if FLAGS.lr:
        changes["learning_rate"] = per_channel([float(value) for value in FLAGS.lr] if len(FLAGS.lr) > 1 else float(FLAGS.lr[0]))
    if FLAGS.clip_to_valid_range is not None:
        changes["clip_to_valid_range"] = FLAGS.clip_to_valid_range
    if FLAGS.initial_fraction_of_eps is not None:
        changes["initial_fraction_of_eps"] = FLAGS.initial_fraction_of_eps
    return dataclasses.replace(config, **changes)


def run_settings(pire_config: PireConfig | None, weights: str | None) -> dict:
    """The settings that determine the modified images; a resumed run must match them."""
    settings = {
        "attack": FLAGS.attack,
        "dataset": FLAGS.dataset,
        "query_mode": FLAGS.query_mode,
        "image_size": FLAGS.image_size,
        "shape_multiple": FLAGS.shape_multiple,
        "save_format": FLAGS.save_format,
        "jpeg_quality": FLAGS.jpeg_quality if FLAGS.save_format == "jpeg" else None,
        "seed": FLAGS.seed,
    }
    if pire_config is not None:
        # The loop form changes speed, not results beyond float rounding, so a resume may switch it.
        pire_settings = dataclasses.asdict(pire_config) | {"loop": None}
        settings.update({"pire": pire_settings, "output": FLAGS.output, "weights": os.path.abspath(weights)})
    else:
        settings["modification_config"] = json.loads(FLAGS.modification_config) if FLAGS.modification_config else None
    return settings


def main(argv):
    del argv
    enable_persistent_compilation_cache()
    unknown = [name for name in FLAGS.systems if name not in available_systems()]
    if unknown:
        raise app.UsageError(f"Unknown --systems {unknown}; expected names from {available_systems()}.")
    output_dir = FLAGS.output_dir or os.path.join("runs", f"{FLAGS.dataset}_{FLAGS.attack}")
    with common_flags.exit_on_input_error():
        dataset = common_flags.open_dataset()

    pire_config, network, weights = None, None, None
    if FLAGS.attack == "pire":
        pire_config = pire_config_from_flags()
        with common_flags.exit_on_input_error():
            weights = common_flags.weights_path()
            network = load_network(weights)
        steps = pire_config.save_steps
        step_labels = {step: f"T{step}" for step in steps}
        logging.info("PIRE settings: %s; network %s (%s input).", pire_config, network.arch, network.input_convention.name)
    else:
        steps = (1,)
        step_labels = {1: FLAGS.attack}
    store = AdversarialStore(output_dir, steps, FLAGS.save_format)
    store.check_run_config(run_settings(pire_config, weights))

    queries, failures = prepare_queries(dataset, FLAGS.query_mode, FLAGS.image_size, FLAGS.shape_multiple)
    start = time.perf_counter()
    if FLAGS.attack == "pire":
        outcome = pire_queries.attack_queries_with_pire(
            network.apply, network.input_convention, network.params, queries, pire_config, store,
            FLAGS.output, FLAGS.seed, FLAGS.batch_size, FLAGS.jpeg_quality,
        )
    else:
        config = json.loads(FLAGS.modification_config) if FLAGS.modification_config else None
        outcome = modified_queries.modify_queries(FLAGS.attack, queries, config, store, FLAGS.seed, FLAGS.jpeg_quality)
        failures += outcome["failed"]
    attack_seconds = time.perf_counter() - start
    finished = [query for query in queries if store.is_finished(query.name)]
    if not finished:
        raise RuntimeError(f"No query could be attacked; see the errors above. Failures: {failures}")
    records = [store.finished_record(query.name) for query in finished]

    systems, database = {}, {}
    for name in FLAGS.systems:
        with common_flags.exit_on_input_error():
            systems[name] = make_system(name, **common_flags.system_options(name))
        database[name] = feature_cache.database_descriptors_for_dataset(systems[name], dataset, common_flags.cache_dir())
    evaluation = evaluate_queries.evaluate_attack_run(dataset, finished, store, step_labels, systems, database)

    first_system = FLAGS.systems[0]
    final_label = step_labels[store.final_step]
    results = {
        "settings": run_settings(pire_config, weights) | {"output": FLAGS.output if pire_config else None},
        "n_queries": len(dataset.query_names),
        "n_queries_evaluated": len(finished),
        "failed_queries": failures,
        "modified_sets": list(step_labels.values()),
        "map_original": evaluation["systems"][first_system]["original"]["map"],
        "map_adversarial": evaluation["systems"][first_system][final_label]["map"],
        "ap_original_per_query": evaluation["systems"][first_system]["original"]["map_per_query"],
        "ap_adversarial_per_query": evaluation["systems"][first_system][final_label]["map_per_query"],
        "ssim_mean": evaluation["image_quality"][final_label]["ssim_mean"],
        "seconds_per_query": float(np.mean([record["seconds"] for record in records])),
        "attack_seconds_this_run": attack_seconds,
        "jax_backend": jax.default_backend(),
        "flags": common_flags.project_flags(),
        **evaluation,
    }
    atomic_io.write_json_atomic(os.path.join(output_dir, "results.json"), results)
    atomic_io.write_text_atomic(os.path.join(output_dir, "results.md"), reports.markdown_table(results))

    shown = finished[: FLAGS.examples]
    if shown:
        reports.write_examples_grid(
            os.path.join(output_dir, "examples.png"),
            [query.image for query in shown],
            [images.load_image(store.image_path(query.name, store.final_step)) for query in shown],
            [query.name for query in shown],
            results["ap_original_per_query"][: len(shown)],
            results["ap_adversarial_per_query"][: len(shown)],
        )
    logging.info("%s on %s: mAP %.2f%% -> %.2f%% (%s), SSIM %.3f. Results in %s.", FLAGS.attack, dataset.name,
                 results["map_original"], results["map_adversarial"], first_system, results["ssim_mean"], output_dir)
    print(reports.markdown_table(results))


if __name__ == "__main__":
    app.run(main)
