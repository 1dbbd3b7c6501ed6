"""Compare how fast PIRE presets break retrieval: mAP and SSIM per iteration count T, from attack_queries runs.

Reads two or more `results.json` files written by

  python -m experiments.attack_queries ... --save_steps 10,20,50,100,200,500

and writes to --output_dir a Markdown table (mAP and mean SSIM per T per run), a
PNG plot (mAP against T on a log axis, one line per run, and SSIM in a second
panel) and a JSON summary. It then states whether each tuned run reaches the
reference (paper) run's mAP at T = --reference_step within --max_steps
iterations, at an SSIM equal to or better than the reference's at that step.
When the reference run's results.json is not at hand, --reference_map and
--reference_ssim give its recorded values instead, and one run suffices.

Example:
  python benchmarks/iterations_to_effect.py \
      --results runs/landmarks48_pire_paper/results.json,runs/landmarks48_pire_tuned/results.json \
      --output_dir runs/benchmarks/iterations_to_effect
"""

import dataclasses
import json
import os
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
from absl import app, flags, logging  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax import atomic_io  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_list("results", None, "results.json files of attack_queries runs, at least two.")
flags.DEFINE_list("labels", None, "Name of each run in the table and plot; default: its --preset, or its folder.")
flags.DEFINE_string("system", "neural", "Retrieval system whose mAP is compared.")
flags.DEFINE_string("reference_label", None, "Label of the reference run; default: the run with --preset=paper.")
flags.DEFINE_integer("reference_step", None, "Iteration of the reference run to reach; default: its last saved one.")
flags.DEFINE_float("reference_map", None, "Recorded mAP (percent) of the reference at --reference_step, used "
                   "in place of a reference run; needs --reference_ssim, --reference_step and --reference_label.")
flags.DEFINE_float("reference_ssim", None, "Recorded mean SSIM of the reference at --reference_step.")
flags.DEFINE_integer("max_steps", 50, "Largest T at which another run may reach the reference mAP.")
flags.DEFINE_string("output_dir", None, "Folder for iterations_to_effect.md, .json and .png.")
flags.mark_flag_as_required("results")
flags.mark_flag_as_required("output_dir")

FLAGS = flags.FLAGS

# Settings that must be equal for two runs to be comparable.
COMPARED_SETTINGS = ("dataset", "query_mode", "image_size", "weights", "output", "save_format")


@dataclasses.dataclass
class Run:
    """mAP (percent) and mean SSIM per saved iteration T of one attack run."""

    label: str
    preset: str
    path: str
    settings: dict[str, Any]
    query_names: list[str]
    map_original: float
    map_by_step: dict[int, float]
    ssim_by_step: dict[int, float]


def preset_of(results: dict[str, Any]) -> str:
    """Return the --preset value recorded in a run's flags, or "unknown"."""
    for line in results.get("flags", []):
        if line.startswith("--preset="):
            return line.split("=", 1)[1]
    return "unknown"


def step_of(label: str) -> int | None:
    """Return t for a modified-set label "T<t>", else None."""
    if label.startswith("T") and label[1:].isdigit():
        return int(label[1:])
    return None


def load_run(path: str, label: str | None, system: str) -> Run:
    """Read one results.json and extract the mAP of `system` and the mean SSIM at every saved T."""
    with open(path, encoding="utf-8") as stream:
        results = json.load(stream)
    if system not in results.get("systems", {}):
        raise ValueError(f"{path} has no results for system {system!r}; it has {sorted(results.get('systems', {}))}. "
                         "Pass --system.")
    per_system = results["systems"][system]
    map_by_step, ssim_by_step = {}, {}
    for name in results["modified_sets"]:
        step = step_of(name)
        if step is None:
            raise ValueError(f"{path} has the modified set {name!r}, which is not a PIRE iteration T<t>.")
        map_by_step[step] = float(per_system[name]["map"])
        ssim_by_step[step] = float(results["image_quality"][name]["ssim_mean"])
    preset = preset_of(results)
    default_label = preset if preset != "unknown" else os.path.basename(os.path.dirname(os.path.abspath(path)))
    return Run(label or default_label, preset, path, results["settings"], list(results.get("query_names", [])),
               float(per_system["original"]["map"]), map_by_step, ssim_by_step)


def comparability_warnings(runs: list[Run]) -> list[str]:
    """List the settings and query sets in which the runs differ from the first one."""
    warnings = []
    first = runs[0]
    for run in runs[1:]:
        for key in COMPARED_SETTINGS:
            if run.settings.get(key) != first.settings.get(key):
                warnings.append(f"{run.label}: {key} = {run.settings.get(key)!r}, {first.label}: "
                                f"{first.settings.get(key)!r}.")
        if run.query_names != first.query_names:
            warnings.append(f"{run.label} and {first.label} evaluated different queries "
                            f"({len(run.query_names)} and {len(first.query_names)}).")
    for warning in warnings:
        logging.warning("Runs are not comparable: %s", warning)
    return warnings


def find_reference(runs: list[Run]) -> Run:
    """Return the run named by --reference_label, or the only run with preset "paper"."""
    if FLAGS.reference_label:
        matches = [run for run in runs if run.label == FLAGS.reference_label]
    else:
        matches = [run for run in runs if run.preset == "paper"]
    if len(matches) != 1:
        raise app.UsageError(f"Found {len(matches)} reference runs among {[run.label for run in runs]}, "
                             "but expected exactly one. Pass --reference_label.")
    return matches[0]


@dataclasses.dataclass
class Target:
    """The mAP and SSIM that a run must reach: the reference at one iteration."""

    label: str
    step: int
    map: float
    ssim: float


def find_target(runs: list[Run]) -> tuple[Target, Run | None]:
    """Return the target and the reference run it comes from (None when given by --reference_map)."""
    if FLAGS.reference_map is not None:
        missing = [name for name in ("reference_ssim", "reference_step", "reference_label") if FLAGS[name].value is None]
        if missing:
            raise app.UsageError(f"--reference_map needs {', '.join('--' + name for name in missing)} as well.")
        return Target(FLAGS.reference_label, FLAGS.reference_step, FLAGS.reference_map, FLAGS.reference_ssim), None
    reference = find_reference(runs)
    step = FLAGS.reference_step or max(reference.map_by_step)
    if step not in reference.map_by_step:
        raise app.UsageError(f"The reference run {reference.label} saved no T={step}; it has "
                             f"{sorted(reference.map_by_step)}.")
    return Target(reference.label, step, reference.map_by_step[step], reference.ssim_by_step[step]), reference


def reach_verdict(run: Run, target: Target, max_steps: int) -> dict[str, Any]:
    """Find the first T <= max_steps at which `run` has mAP <= the target's and SSIM >= the target's.

    Only the saved iterations of `run` are checked, so the reported T is an upper
    bound of the first iteration that reaches the target.
    """
    target_map, target_ssim, reference_step = target.map, target.ssim, target.step
    checked = sorted(step for step in run.map_by_step if step <= max_steps)
    reached = [step for step in checked
               if run.map_by_step[step] <= target_map and run.ssim_by_step[step] >= target_ssim]
    map_only = [step for step in checked if run.map_by_step[step] <= target_map]
    verdict = {
        "run": run.label, "reference": target.label, "reference_step": reference_step,
        "reference_map": target_map, "reference_ssim": target_ssim, "max_steps": max_steps,
        "checked_steps": checked, "reached": bool(reached), "first_step": reached[0] if reached else None,
        "first_step_map_only": map_only[0] if map_only else None,
    }
    if reached:
        step = reached[0]
        verdict["statement"] = (
            f"{run.label} reaches the {target.label} T={reference_step} mAP ({target_map:.2f}%) at T={step} "
            f"<= {max_steps}: mAP {run.map_by_step[step]:.2f}%, SSIM {run.ssim_by_step[step]:.3f} >= {target_ssim:.3f}.")
    elif map_only:
        step = map_only[0]
        verdict["statement"] = (
            f"{run.label} reaches the {target.label} T={reference_step} mAP ({target_map:.2f}%) at T={step}, "
            f"but at a lower SSIM ({run.ssim_by_step[step]:.3f} < {target_ssim:.3f}): target not met.")
    elif checked:
        best = min(checked, key=lambda step: run.map_by_step[step])
        verdict["statement"] = (
            f"{run.label} does not reach the {target.label} T={reference_step} mAP ({target_map:.2f}%) within "
            f"T <= {max_steps}: its best is {run.map_by_step[best]:.2f}% at T={best}. Target not met.")
    else:
        verdict["statement"] = f"{run.label} saved no iteration T <= {max_steps}; save e.g. --save_steps 10,20,50."
    return verdict


def render_table(runs: list[Run]) -> str:
    """Return a Markdown table with one row per T and an mAP and an SSIM column per run."""
    steps = sorted({step for run in runs for step in run.map_by_step})
    headers = ["T"] + [f"{kind} {run.label}" for run in runs for kind in ("mAP (%)", "SSIM")]
    rows = [["original"] + [cell for run in runs for cell in (f"{run.map_original:.2f}", "1.000")]]
    for step in steps:
        row = [str(step)]
        for run in runs:
            row.append(f"{run.map_by_step[step]:.2f}" if step in run.map_by_step else "-")
            row.append(f"{run.ssim_by_step[step]:.3f}" if step in run.ssim_by_step else "-")
        rows.append(row)
    return common.markdown_table(headers, rows)


def plot_runs(runs: list[Run], path: str) -> None:
    """Plot mAP and SSIM against T (log axis), one line per run, and save a PNG atomically."""
    figure, (map_axis, ssim_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in runs:
        steps = sorted(run.map_by_step)
        line, = map_axis.plot(steps, [run.map_by_step[step] for step in steps], marker="o", label=run.label)
        map_axis.axhline(run.map_original, color=line.get_color(), linestyle=":", linewidth=1)
        ssim_axis.plot(steps, [run.ssim_by_step[step] for step in steps], marker="o", label=run.label)
    map_axis.set(xscale="log", xlabel="PIRE iterations T", ylabel=f"mAP {FLAGS.system} (%)",
                 title="Retrieval (dotted: original queries)")
    ssim_axis.set(xscale="log", xlabel="PIRE iterations T", ylabel="mean SSIM", title="Image quality")
    for axis in (map_axis, ssim_axis):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_io.atomic_output_path(path) as temporary_path:
        figure.savefig(temporary_path, format="png", dpi=120)
    plt.close(figure)


def main(argv):
    del argv
    recorded_reference = FLAGS.reference_map is not None
    if len(FLAGS.results) < (1 if recorded_reference else 2):
        raise app.UsageError(f"Invalid --results: {len(FLAGS.results)} file(s); expected at least two runs, "
                             "or one with --reference_map.")
    if FLAGS.labels and len(FLAGS.labels) != len(FLAGS.results):
        raise app.UsageError(f"Invalid --labels: {len(FLAGS.labels)} labels for {len(FLAGS.results)} results files.")
    labels = FLAGS.labels or [None] * len(FLAGS.results)
    runs = [load_run(path, label, FLAGS.system) for path, label in zip(FLAGS.results, labels)]
    if len({run.label for run in runs}) != len(runs):
        raise app.UsageError(f"Runs share labels {[run.label for run in runs]}; pass distinct --labels.")

    target, reference = find_target(runs)
    candidates = [run for run in runs if run.preset == "tuned"] or [run for run in runs if run is not reference]
    verdicts = [reach_verdict(run, target, FLAGS.max_steps) for run in candidates]
    warnings = comparability_warnings(runs)

    plot_path = os.path.join(FLAGS.output_dir, "iterations_to_effect.png")
    plot_runs(runs, plot_path)
    lines = [f"## PIRE iterations to effect ({FLAGS.system} mAP and mean SSIM per T)", "",
             "Runs: " + ", ".join(f"{run.label} ({run.path})" for run in runs), "", render_table(runs)]
    if reference is None:
        lines += [f"Reference: {target.label} at T={target.step}, recorded mAP {target.map:.2f}% and SSIM "
                  f"{target.ssim:.3f} (given on the command line, not read from a run).", ""]
    lines += [verdict["statement"] for verdict in verdicts]
    if warnings:
        lines += ["", "The runs differ in:"] + [f"- {warning}" for warning in warnings]
    markdown = "\n".join(lines) + "\n"
    data = {"runs": [dataclasses.asdict(run) for run in runs], "target": dataclasses.asdict(target),
            "verdicts": verdicts, "warnings": warnings,
            "plot": plot_path}
    common.write_results(FLAGS.output_dir, "iterations_to_effect", data, markdown)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
