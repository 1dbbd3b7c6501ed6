"""Compare pire_jax's PIRE with a PyTorch version of the released attack loop: speed and agreement.

Both frameworks attack the same image with VGG16-GeM holding the same weights: one
pire_jax network file, copied into torch. They run on the same CPUs with the same
number of threads, set by the CPU affinity (which XLA:CPU and torch both follow)
and by `torch.set_num_threads`. Paper settings: eps 10/255 and Adam lr 1e-4 in
ImageNet-normalised units, no clip of x + v to the valid range.

Speed: seconds per iteration after warm-up for the torch loop with the released
code's defects ("released") and with them fixed ("fixed"), see
torch_released_loop.py, and for pire_jax's attack in each loop form of --loops (see
`common.time_pire_iterations`). Targets on CPU: pire_jax needs at least 2x fewer
seconds per iteration than "released" and must be no slower than "fixed".

Agreement: starting from the same v0, the PIRE objective ||f(x + v) - f(x)||^2 of
each of the first --check_steps iterations of pire_jax is compared with the "fixed"
torch loop, which updates and clips in the same order.

Example (smoke run, about a minute on 2 CPU cores):
  python benchmarks/pire_vs_torch.py --image_size 64 --steps 3 --check_steps 3 --repeats 1
Full run:
  python benchmarks/pire_vs_torch.py --image <photo.jpg> --image_size 512 --steps 20 \
      --output_dir runs/benchmarks/pire_vs_torch
"""

import dataclasses
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks import torch_released_loop  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.attacks import pire  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.attacks.pire_config import paper_config  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.models import RetrievalNetwork  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_list("loops", ["python", "fori"], "pire_jax loop forms to time: python, fori, scan.")
flags.DEFINE_integer("check_steps", 5, "Iterations whose objectives are compared between pire_jax and torch.")
flags.DEFINE_float("rtol", 1e-3, "Largest relative difference of the objectives that counts as agreement.")
flags.DEFINE_string("output_dir", None, "Folder for pire_vs_torch.json and pire_vs_torch.md; unset only prints.")

FLAGS = flags.FLAGS

SPEEDUP_TARGET_OVER_RELEASED = 2.0  # pire_jax must need at least 2x fewer seconds per iteration.


def jax_objectives_from(network: RetrievalNetwork, image: np.ndarray, v0: np.ndarray, steps: int) -> list[float]:
    """Run `steps` pire_jax iterations from the given v0 (normalised units) and return each iteration's objective."""
    config = dataclasses.replace(paper_config(steps=steps), loop="python")
    objectives: list[float] = []

    def record(step, step_objectives):
        del step
        objectives.append(float(step_objectives[0]))

    pire.pire_attack(
        network.apply,
        network.input_convention,
        network.params,
        image[None],
        jax.random.split(jax.random.PRNGKey(0), 1),
        config,
        progress=record,
        initial_perturbations=pire.to_grey_levels(jnp.asarray(v0, jnp.float32))[None],
    )
    return objectives


def relative_differences(values: list[float], reference: list[float]) -> list[float]:
    """Return |value - reference| / |reference| element-wise."""
    return [abs(value - expected) / max(abs(expected), 1e-30) for value, expected in zip(values, reference)]


def check_agreement(network: RetrievalNetwork, model, image: np.ndarray, v0: np.ndarray) -> dict[str, Any]:
    """Compare clean descriptors and the first --check_steps objectives of pire_jax and torch from the same v0."""
    torch = torch_released_loop.import_torch()
    jax_descriptor = np.asarray(network.apply(network.params, network.input_convention.to_network_input(image[None])))[0]
    with torch.no_grad():
        torch_descriptor = model(torch_released_loop.imagenet_normalise(image))[0].numpy()

    jax_objectives = jax_objectives_from(network, image, v0, FLAGS.check_steps)
    torch_runs = {variant: torch_released_loop.run_loop(model, image, v0, FLAGS.check_steps, variant).objectives
                  for variant in torch_released_loop.VARIANTS}
    jax_vs_fixed = relative_differences(jax_objectives, torch_runs["fixed"])
    return {
        "descriptor_max_abs_difference": float(np.max(np.abs(jax_descriptor - torch_descriptor))),
        "objectives_jax": jax_objectives,
        "objectives_torch_fixed": torch_runs["fixed"],
        "objectives_torch_released": torch_runs["released"],
        "relative_difference_jax_vs_fixed": jax_vs_fixed,
        "relative_difference_released_vs_fixed": relative_differences(torch_runs["released"], torch_runs["fixed"]),
        "agrees": bool(max(jax_vs_fixed) <= FLAGS.rtol),
    }


def time_both(network: RetrievalNetwork, model, image: np.ndarray, v0: np.ndarray) -> dict[str, dict[str, float]]:
    """Return {name: timing} for each torch variant of --variants and each pire_jax loop of --loops.

    After compiling every pire_jax attack, --repeats rounds time each contestant once
    in turn, so that load changes on a shared machine hit all of them alike. Each
    contestant keeps its fastest round.
    """
    keys = jax.random.split(jax.random.PRNGKey(FLAGS.seed), 1)
    # T = steps + 1 against T = 1 gives `steps` timed iterations.
    timers = {loop: common.PireIterationTimer(network, image[None], keys, loop, FLAGS.steps + 1) for loop in FLAGS.loops}
    for timer in timers.values():
        timer.compile()

    torch_seconds: dict[str, list[float]] = {variant: [] for variant in FLAGS.variants}
    for round_index in range(max(1, FLAGS.repeats)):
        for variant in FLAGS.variants:
            torch_seconds[variant].append(torch_released_loop.seconds_per_iteration(
                model, image, v0, variant, FLAGS.warmup_steps, FLAGS.steps, repeats=1))
        for timer in timers.values():
            timer.measure_once()
        logging.info("Finished timing round %d of %d.", round_index + 1, FLAGS.repeats)

    timings = {f"torch {variant}": {"seconds_per_iteration": min(seconds)} for variant, seconds in torch_seconds.items()}
    timings |= {f"pire_jax {loop}": timer.summary() for loop, timer in timers.items()}
    for name, timing in timings.items():
        logging.info("%s: %.4f s per iteration.", name, timing["seconds_per_iteration"])
    return timings


def evaluate_targets(timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Check the speed targets for the loop form pire_jax uses by default on this backend."""
    default_loop = pire.resolve_loop(paper_config())
    ours = timings.get(f"pire_jax {default_loop}", {}).get("seconds_per_iteration")
    released = timings.get("torch released", {}).get("seconds_per_iteration")
    fixed = timings.get("torch fixed", {}).get("seconds_per_iteration")
    targets: dict[str, Any] = {"pire_jax_loop": default_loop}
    if ours is not None and released is not None and np.isfinite(ours):
        targets["speedup_over_released"] = released / ours
        targets["speedup_over_released_met"] = bool(released / ours >= SPEEDUP_TARGET_OVER_RELEASED)
    if ours is not None and fixed is not None and np.isfinite(ours):
        targets["speedup_over_fixed"] = fixed / ours
        targets["no_slower_than_fixed_met"] = bool(ours <= fixed)
    return targets


def render_markdown(timings, targets, agreement, image_shape, threads, machine) -> str:
    """Render timings, targets and the agreement check as Markdown."""
    fmt = common.format_number
    fixed = timings.get("torch fixed", {}).get("seconds_per_iteration")
    released = timings.get("torch released", {}).get("seconds_per_iteration")
    rows = []
    for name, timing in timings.items():
        seconds = timing["seconds_per_iteration"]
        rows.append([name, fmt(seconds), fmt(timing.get("compile_seconds")),
                     fmt(released / seconds if released else None), fmt(fixed / seconds if fixed else None)])

    def verdict(key):
        if key not in targets:
            return "not measured"
        return "met" if targets[key] else "NOT met"

    lines = [
        f"## PIRE: pire_jax vs the released PyTorch loop ({image_shape[0]}x{image_shape[1]} px, VGG16-GeM, "
        f"{threads} threads, {machine['cpu']})",
        "",
        f"s / iteration after warm-up, fastest of {FLAGS.repeats} interleaved rounds of {FLAGS.steps} iterations. "
        "Ratio columns: torch seconds / these seconds (above 1: faster than that torch loop).",
        "",
        common.markdown_table(["loop", "s / iteration", "compile (s)", "x vs torch released", "x vs torch fixed"], rows),
        f"Targets for pire_jax's default loop on {machine['jax_backend']} ({targets['pire_jax_loop']}):",
        f"- at least {SPEEDUP_TARGET_OVER_RELEASED:g}x faster than torch released: "
        f"{fmt(targets.get('speedup_over_released'))}x, {verdict('speedup_over_released_met')}",
        f"- no slower than torch fixed: {fmt(targets.get('speedup_over_fixed'))}x, {verdict('no_slower_than_fixed_met')}",
        "",
        f"### Agreement from the same v0 ({FLAGS.check_steps} iterations)",
        "",
        f"Clean descriptor max |jax - torch|: {agreement['descriptor_max_abs_difference']:.2e}.",
        "",
        common.markdown_table(
            ["iteration", "pire_jax objective", "torch fixed", "torch released", "rel. diff jax vs fixed"],
            [[index + 1, f"{jax_value:.6e}", f"{fixed_value:.6e}", f"{released_value:.6e}", f"{difference:.1e}"]
             for index, (jax_value, fixed_value, released_value, difference) in enumerate(zip(
                 agreement["objectives_jax"], agreement["objectives_torch_fixed"],
                 agreement["objectives_torch_released"], agreement["relative_difference_jax_vs_fixed"]))],
        ),
        f"pire_jax and torch fixed agree within rtol {FLAGS.rtol:g}: {'yes' if agreement['agrees'] else 'NO'}. "
        "The released loop may differ from iteration 2 on, because its forward pass evaluates f at v before the clip.",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    network, model, image, v0, threads = torch_released_loop.setup_from_flags()
    machine = common.machine_description() | {"threads": threads}
    logging.info("Machine: %s", machine)

    agreement = check_agreement(network, model, image, v0)
    timings = time_both(network, model, image, v0)
    targets = evaluate_targets(timings)
    markdown = render_markdown(timings, targets, agreement, image.shape, threads, machine)

    settings = {flag: FLAGS[flag].value for flag in ("weights", "image", "image_size", "steps", "warmup_steps",
                                                      "repeats", "variants", "loops", "check_steps", "rtol", "seed")}
    settings["weights_file"] = torch_released_loop.weights_path()
    data = {"settings": settings, "machine": machine, "image_shape": list(image.shape), "timings": timings,
            "targets": targets, "agreement": agreement}
    common.write_results(FLAGS.output_dir, "pire_vs_torch", data, markdown)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
