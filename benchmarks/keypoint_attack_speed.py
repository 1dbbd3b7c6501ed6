"""Time every keypoint attack and the Gaussian-noise baseline on 1024 x 768 photos, and write a Markdown page.

Each photo is a landmarks48 image whose size is exactly 1024 x 768 (landscape or
portrait). Every query modification runs once per photo with its default settings
(the Gaussian baseline aims at SSIM 0.687, the Oxford WI SSIM of PIRE T=500 in Liu et
al. 2019) and the wall time, keypoint counts and image quality are reported.

Example:
  python benchmarks/keypoint_attack_speed.py --data_root ../shared/data \
      --output benchmarks/RESULTS_keypoint_attacks.md
"""

import json
import os
import platform
import sys
import time

import cv2
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pire_jax import atomic_io, datasets, images  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.attacks.keypoints import registry  # noqa: E402  pylint: disable=wrong-import-position

PIRE_OXFORD_WI_SSIM = 0.687  # Liu et al. 2019, Table 3: PIRE T=500, Oxford5k whole images.

flags.DEFINE_string("data_root", None, f"Folder of the datasets; unset reads ${datasets.DATA_ROOT_ENV}.")
flags.DEFINE_list(
    "images", ["oxford_pitt_rivers_03.jpg", "oxford_radcliffe_camera_00.jpg"],
    "landmarks48 photos to time, each exactly 1024 x 768 or 768 x 1024 pixels.",
)
flags.DEFINE_list("modifications", list(registry.QUERY_MODIFICATIONS), "Query modifications to time.")
flags.DEFINE_integer("seed", 0, "Seed of the modifications.")
flags.DEFINE_string("output", None, "Markdown page to write the results to; unset only logs them.")
flags.DEFINE_string(
    "pairs_results", None,
    "results.json of experiments/keypoint_attack_pairs.py to summarise on the same page; unset leaves it out.",
)

FLAGS = flags.FLAGS


def _load_photo(root: str, name: str) -> np.ndarray:
    image = images.load_image(os.path.join(root, "landmarks48", "jpg", name))
    if sorted(image.shape[:2]) != [768, 1024]:
        raise ValueError(f"Photo {name} is {image.shape[1]}x{image.shape[0]}; pick a 1024 x 768 landmarks48 photo.")
    return image


def _settings(name: str):
    if name == registry.GAUSSIAN:
        return {"target_ssim": PIRE_OXFORD_WI_SSIM}
    return None


def _pairs_section(path: str) -> list[str]:
    """Summarise the sift_pairs matching results of experiments/keypoint_attack_pairs.py as Markdown lines."""
    with open(path, encoding="utf-8") as stream:
        results = json.load(stream)
    lines = [
        "",
        "## SIFT matching on sift_pairs",
        "",
        f"From `{results['command']}`. The first image of each pair is attacked and matched against the unchanged",
        "second image (OpenCV SIFT, Lowe ratio 0.8); a match is correct when the reference homography maps it",
        "within 3 px.",
        "",
        "| pair | homography | attack | removed | forged | correct matches | drop | PSNR dB | SSIM | time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair, result in results["pairs"].items():
        source = "ground truth" if result["homography"]["source"].startswith("ground truth") else "RANSAC"
        original = result["original"]["correct_matches"]
        lines.append(f"| {pair} | {source} | none | - | - | {original} | - | - | - | - |")
        for attack, row in result["attacks"].items():
            psnr = "inf" if row["psnr"] is None else f"{row['psnr']:.2f}"
            lines.append(
                f"| {pair} | {source} | {attack} | {100 * row['removed_fraction']:.1f}% | {row['forged']} | "
                f"{row['correct_matches']} | {100 * row['correct_match_drop']:.1f}% | {psnr} | {row['ssim']:.3f} | "
                f"{row['seconds']:.1f} |"
            )
    return lines


def main(argv):
    del argv
    root = datasets.resolve_data_root(FLAGS.data_root)
    rows = []
    for photo_name in FLAGS.images:
        photo = _load_photo(root, photo_name)
        for name in FLAGS.modifications:
            start = time.perf_counter()
            _, report = registry.apply_query_modification(name, photo, _settings(name), FLAGS.seed)
            seconds = time.perf_counter() - start
            rows.append((photo_name, name, seconds, report))
            print(
                f"{photo_name} {name}: {seconds:.1f} s, {report['keypoints_before']} keypoints, "
                f"{100 * report['removed_fraction']:.1f}% removed, {report['forged']} forged, SSIM {report['ssim']:.3f}",
                flush=True,
            )

    lines = [
        "# Keypoint attacks and Gaussian noise: speed on 1024 x 768 photos",
        "",
        "Written by `benchmarks/keypoint_attack_speed.py`: one run per photo and modification with the default",
        f"settings (Gaussian noise aimed at SSIM {PIRE_OXFORD_WI_SSIM}). The time includes detection before and",
        "after, colour recovery, PSNR and SSIM. The machine is shared, so times change with its load.",
        "",
        "## Setup",
        "",
        f"- photos: landmarks48 {', '.join(FLAGS.images)}",
        f"- CPU: {platform.machine()}, {os.cpu_count()} cores visible, OpenCV threads {cv2.getNumThreads()}",
        f"- software: Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}",
        f"- seed: {FLAGS.seed}",
        "",
        "## Results",
        "",
        "| photo | modification | time s | keypoints | removed | forged | PSNR dB | SSIM | max channel change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for photo_name, name, seconds, report in rows:
        psnr = "inf" if report["psnr"] is None else f"{report['psnr']:.2f}"
        lines.append(
            f"| {photo_name} | {name} | {seconds:.1f} | {report['keypoints_before']} | "
            f"{100 * report['removed_fraction']:.1f}% | {report['forged']} | {psnr} | {report['ssim']:.3f} | "
            f"{report['max_abs_change']} |"
        )
    if FLAGS.pairs_results:
        lines += _pairs_section(FLAGS.pairs_results)
    page = "\n".join(lines) + "\n"
    logging.info("Results:\n%s", page)
    if FLAGS.output:
        atomic_io.write_text_atomic(FLAGS.output, page)


if __name__ == "__main__":
    app.run(main)
