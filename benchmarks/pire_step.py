"""Time one PIRE iteration per network, image size, batch size and loop form, and report compile time and GFLOP/s.

Each configuration runs the public `pire_attack` with the released code's settings
(`paper_config`) at T = --steps and at T = 1, and reports
seconds per iteration = (t(T) - t(1)) / (T - 1), where t is the fastest of
--repeats steady (already compiled) calls (see `common.time_pire_iterations`).
Compile time is the first call of the T-step attack minus its fastest steady call.
The work per iteration is XLA's FLOP count of value_and_grad of the PIRE objective
with respect to the input (one forward and one input-gradient backward pass,
without the Adam update), taken from the compiled program's cost analysis.

Random weights are used unless --weights names a converted network file. The time
of dense convolutions does not depend on the weight values.

Example (smoke run, a minute or two on 2 CPU cores):
  python benchmarks/pire_step.py --archs vgg16 --sizes 64 --batch_sizes 1,2 --steps 3 \
      --loops python,fori --output_dir /tmp/pire_step
Full grid (an estimated 3 hours on 2 CPU cores at 50 GFLOP/s):
  python benchmarks/pire_step.py --output_dir runs/benchmarks/pire_step
"""

import dataclasses
import os
import sys
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.attacks.pire_config import PAPER_STEPS  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.jax_cache import enable_persistent_compilation_cache  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.models import CAFFE_BGR, IMAGENET_RGB, RetrievalNetwork, load_network  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_list("archs", ["vgg16", "resnet101"], "Backbones of the GeM networks to time.")
flags.DEFINE_list("sizes", ["224", "512"], "Long sides of the attacked images, in pixels.")
flags.DEFINE_enum("aspect", "square", list(common.ASPECTS), "Image shape: square, or 4:3 landscape (width = size).")
flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8"], "Numbers of equal-shape queries attacked at once.")
flags.DEFINE_list("loops", ["python", "fori", "scan"],
                  "PIRE loop forms: python (jitted step called from Python), fori (lax.fori_loop), scan (lax.scan).")
flags.DEFINE_integer("scan_unroll", 10, "Unroll factor of the scan loop.")
flags.DEFINE_integer("steps", 5, "Iterations T of the long timed attack (at least 2); the short one has T = 1.")
flags.DEFINE_integer("repeats", 2, "Steady calls per timing after the compiling call; the fastest is kept.")
flags.DEFINE_string("weights", None, "Converted network file; it replaces the random network of its architecture.")
flags.DEFINE_integer("threads", 0, "Number of CPUs to use (CPU affinity); 0 uses all.")
flags.DEFINE_boolean("compilation_cache", False,
                     "Turn on the persistent compilation cache. A cache hit hides compile time, so it is off by default.")
flags.DEFINE_integer("seed", 0, "Seed of the random weights, test images and initial perturbations.")
flags.DEFINE_string("output_dir", None, "Folder for pire_step.json and pire_step.md; unset only prints.")

FLAGS = flags.FLAGS

# Iterations of the released PIRE code, used to express throughput per attacked query.
REFERENCE_STEPS = PAPER_STEPS


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed configuration."""

    arch: str
    weights: str
    height: int
    width: int
    batch: int
    loop: str


def build_networks() -> dict[str, tuple[RetrievalNetwork, str]]:
    """Return {arch: (network, weights description)} for --archs, with --weights replacing its architecture."""
    networks = {}
    for arch in FLAGS.archs:
        convention = CAFFE_BGR if arch.startswith("vgg") else IMAGENET_RGB
        networks[arch] = (common.random_network(arch, convention, FLAGS.seed), "random")
    if FLAGS.weights:
        network = load_network(FLAGS.weights)
        networks[network.arch] = (network, os.path.basename(FLAGS.weights))
    return networks


def time_case(case: Case, network: RetrievalNetwork, flops: dict[str, float | None]) -> dict[str, Any]:
    """Time one configuration and derive per-iteration seconds, throughput and GFLOP/s."""
    query_images = common.smooth_test_images(case.batch, case.height, case.width, FLAGS.seed)
    keys = jax.random.split(jax.random.PRNGKey(FLAGS.seed), case.batch)
    timing = common.time_pire_iterations(network, query_images, keys, case.loop, FLAGS.steps, FLAGS.repeats,
                                         FLAGS.scan_unroll)

    seconds_per_iteration = timing["seconds_per_iteration"]
    iteration_flops = flops["value_and_grad"]
    return dataclasses.asdict(case) | timing | {
        "query_iterations_per_second": case.batch / seconds_per_iteration,
        f"seconds_per_query_T{REFERENCE_STEPS}": REFERENCE_STEPS * seconds_per_iteration / case.batch,
        "forward_gflop": flops["forward"] / 1e9 if flops["forward"] else None,
        "value_and_grad_gflop": iteration_flops / 1e9 if iteration_flops else None,
        "gflop_per_second": iteration_flops / seconds_per_iteration / 1e9 if iteration_flops else None,
    }


def run_grid(networks: dict[str, tuple[RetrievalNetwork, str]]) -> list[dict[str, Any]]:
    """Time every (arch, size, batch, loop) combination of the flags, in that nesting order."""
    rows = []
    for arch, (network, weights) in networks.items():
        for size in (int(value) for value in FLAGS.sizes):
            height, width = common.image_shape(size, FLAGS.aspect)
            for batch in (int(value) for value in FLAGS.batch_sizes):
                flops = common.forward_and_gradient_flops(network, batch, height, width)
                for loop in FLAGS.loops:
                    case = Case(arch, weights, height, width, batch, loop)
                    logging.info("Timing %s.", case)
                    row = time_case(case, network, flops)
                    logging.info("%s: %.4f s per iteration, compile %.1f s.", case, row["seconds_per_iteration"],
                                 row["compile_seconds"])
                    rows.append(row)
    return rows


def fastest_loops(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (arch, shape, batch), name the loop form with the fewest seconds per iteration."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arch"], row["height"], row["width"], row["batch"]), []).append(row)
    winners = []
    for (arch, height, width, batch), group in groups.items():
        timed = [row for row in group if np.isfinite(row["seconds_per_iteration"])]
        if not timed:
            continue
        best = min(timed, key=lambda row: row["seconds_per_iteration"])
        python = next((row for row in timed if row["loop"] == "python"), None)
        winners.append({
            "arch": arch, "height": height, "width": width, "batch": batch, "fastest_loop": best["loop"],
            "speedup_over_python": python["seconds_per_iteration"] / best["seconds_per_iteration"] if python else None,
        })
    return winners


def render_markdown(rows: list[dict[str, Any]], winners: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """Render the timings, the fastest loop per configuration and the machine as Markdown."""
    fmt = common.format_number
    table = common.markdown_table(
        ["network", "weights", "input (HxW)", "batch", "loop", "compile (s)", "s / iteration", "query-iterations / s",
         f"s / query at T={REFERENCE_STEPS}", "GFLOP forward", "GFLOP / iteration", "GFLOP/s"],
        [[row["arch"], row["weights"], f"{row['height']}x{row['width']}", row["batch"], row["loop"],
          fmt(row["compile_seconds"]), fmt(row["seconds_per_iteration"]), fmt(row["query_iterations_per_second"]),
          fmt(row[f"seconds_per_query_T{REFERENCE_STEPS}"]), fmt(row["forward_gflop"]), fmt(row["value_and_grad_gflop"]),
          fmt(row["gflop_per_second"])] for row in rows],
    )
    winner_table = common.markdown_table(
        ["network", "input (HxW)", "batch", "fastest loop", "speed-up over python"],
        [[row["arch"], f"{row['height']}x{row['width']}", row["batch"], row["fastest_loop"],
          fmt(row["speedup_over_python"])] for row in winners],
    )
    return "\n".join([
        f"## PIRE iteration speed on {machine['jax_backend']} ({machine['cpu']}, {machine['cpus_usable']} CPUs)",
        "",
        f"Preset `paper` (paper_config); s / iteration = (t(T={FLAGS.steps}) - t(T=1)) / {FLAGS.steps - 1}, fastest of "
        f"{FLAGS.repeats} steady calls. GFLOP from XLA's cost analysis of the compiled programs: forward = one "
        "descriptor forward pass of the batch; per iteration = value_and_grad of the PIRE objective with respect to "
        "the input (forward + input-gradient backward, no Adam update), which GFLOP/s divides by s / iteration. "
        f"Compile: first call minus steady call of the T={FLAGS.steps} attack. Scan unroll {FLAGS.scan_unroll}.",
        "",
        table,
        f"### Fastest loop form on {machine['jax_backend']}",
        "",
        winner_table,
    ])


def main(argv):
    del argv
    if FLAGS.steps < 2:
        raise app.UsageError(f"Invalid --steps {FLAGS.steps}; expected at least 2, because the short attack has T = 1.")
    threads = common.limit_cpu_threads(FLAGS.threads)
    if FLAGS.compilation_cache:
        enable_persistent_compilation_cache()
    elif jax.config.jax_compilation_cache_dir:
        logging.warning("A persistent compilation cache is set (%s); compile times may be cache hits.",
                        jax.config.jax_compilation_cache_dir)
    machine = common.machine_description() | {"threads": threads}
    logging.info("Machine: %s", machine)

    rows = run_grid(build_networks())
    winners = fastest_loops(rows)
    markdown = render_markdown(rows, winners, machine)
    settings = {flag: FLAGS[flag].value for flag in ("archs", "sizes", "aspect", "batch_sizes", "loops", "scan_unroll",
                                                      "steps", "repeats", "weights", "threads", "seed")}
    data = {"settings": settings, "machine": machine, "flop_source": "compiled cost_analysis()['flops']",
            "rows": rows, "fastest_loops": winners}
    common.write_results(FLAGS.output_dir, "pire_step", data, markdown)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
