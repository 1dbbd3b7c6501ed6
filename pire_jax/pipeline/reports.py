"""Human-readable outputs of an attack run: a Markdown table (one row per query set, as in Liu et al. 2019) and an image grid."""

from typing import Any, Sequence

import numpy as np

from pire_jax import atomic_io


def _format(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: dict[str, Any]) -> str:
    """Render the results of `attack_queries` as Markdown.

    One row per modified query set (e.g. PIRE T=200, T=500), one mAP column per
    retrieval system, then mean SSIM, PSNR and maximum L-infinity.
    """
    systems = list(results["systems"])
    settings = results["settings"]
    lines = [
        f"# Adversarial queries: {settings['attack']} on {settings['dataset']} ({settings['query_mode'].upper()} queries)",
        "",
        f"Queries evaluated: {results['n_queries_evaluated']} of {results['n_queries']}; "
        f"long side at most {settings['image_size']} px; "
        + (f"output rule {settings['output']}; " if settings.get("output") else "")
        + f"saved as {settings['save_format']}.",
        "",
        "| queries | " + " | ".join(f"mAP {name} (%)" for name in systems) + " | SSIM | PSNR (dB) | max L-inf |",
        "|---|" + "---|" * len(systems) + "---|---|---|",
    ]
    row = ["original"] + [_format(results["systems"][name]["original"]["map"]) for name in systems] + ["1.000", "-", "0"]
    lines.append("| " + " | ".join(row) + " |")
    for label in results["modified_sets"]:
        quality = results["image_quality"][label]
        row = [label] + [_format(results["systems"][name][label]["map"]) for name in systems]
        row += [_format(quality["ssim_mean"], 3), _format(quality["psnr_mean"]), str(quality["linf_max"])]
        lines.append("| " + " | ".join(row) + " |")
    timing = results.get("seconds_per_query")
    if timing is not None:
        lines += ["", f"Attack time: {_format(timing)} s per query."]
    if results.get("failed_queries"):
        lines += ["", "Queries that failed and were left out:"]
        lines += [f"- {failure['query']}: {failure['error']}" for failure in results["failed_queries"]]
    return "\n".join(lines) + "\n"


def write_examples_grid(
    path: str,
    originals: Sequence[np.ndarray],
    adversarials: Sequence[np.ndarray],
    names: Sequence[str],
    ap_original: Sequence[float | None],
    ap_adversarial: Sequence[float | None],
) -> None:
    """Save a PNG grid: original, adversarial and amplified difference for a few queries, with AP under each.

    Args:
      path: PNG destination (written atomically).
      originals, adversarials: uint8 (H, W, 3) pairs.
      names: query names.
      ap_original, ap_adversarial: AP in percent (None for a skipped query).

    The difference panel scales |adversarial - original| so that its largest value
    becomes 255, and states the factor.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    rows = len(originals)
    figure, axes = pyplot.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row, (original, adversarial, name) in enumerate(zip(originals, adversarials, names)):
        difference = np.abs(adversarial.astype(np.int16) - original.astype(np.int16)).astype(np.float32)
        amplification = 255.0 / max(float(difference.max()), 1.0)
        amplified = np.clip(np.rint(difference * amplification), 0, 255).astype(np.uint8)
        panels = [
            (original, f"{name}\noriginal, AP {_format(ap_original[row])}"),
            (adversarial, f"adversarial, AP {_format(ap_adversarial[row])}"),
            (amplified, f"|difference| x{amplification:.1f} (max {int(difference.max())} grey levels)"),
        ]
        for column, (image, title) in enumerate(panels):
            axes[row, column].imshow(image)
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    with atomic_io.atomic_output_path(path) as temporary_path:
        figure.savefig(temporary_path, format="png", dpi=100)
    pyplot.close(figure)
