"""Measure what each keypoint attack does to SIFT matching on real image pairs.

For every pair of <data_root>/sift_pairs (graf1/graf3 with the ground-truth homography
H1to3p.xml, leuvenA/leuvenB, box/box_in_scene) the first image is attacked with each
keypoint attack, and the attacked image is matched against the unchanged second one.
Reported per attack: fraction of the first image's keypoints removed, keypoints
forged, ratio-test matches and correct matches (homography error <= 3 px) with their
drop from the unattacked pair, and PSNR / SSIM of the attacked image.

The leuven and box pairs have no ground-truth homography. It is estimated with RANSAC
on the unattacked pair and used as the reference for all attacks of that pair, and
results.md states this for each pair.

  python -m experiments.keypoint_attack_pairs --data_root ../shared/data --output_dir runs/keypoint_pairs

Outputs under --output_dir: results.json, results.md and, with --save_images, the
attacked images as PNG in images/.
"""

import dataclasses
import os
import time

from absl import app, flags, logging

from pire_jax import atomic_io, datasets, images
from pire_jax.attacks.keypoints import registry
from pire_jax.evaluation import keypoint_matching

PAIRS = {
    "graf": ("graf1.png", "graf3.png", "H1to3p.xml"),
    "leuven": ("leuvenA.jpg", "leuvenB.jpg", None),
    "box": ("box.png", "box_in_scene.png", None),
}
KEYPOINT_ATTACKS = tuple(name for name in registry.QUERY_MODIFICATIONS if name != registry.GAUSSIAN)

flags.DEFINE_string("data_root", None, f"Folder holding sift_pairs/; unset reads ${datasets.DATA_ROOT_ENV}.")
flags.DEFINE_string("output_dir", None, "Folder for results.json, results.md and images/.")
flags.DEFINE_list("pairs", list(PAIRS), f"Pairs to evaluate, among {list(PAIRS)}.")
flags.DEFINE_list("attacks", list(KEYPOINT_ATTACKS), f"Attacks to run, among {list(KEYPOINT_ATTACKS)}.")
flags.DEFINE_integer("seed", 0, "Seed of the attacks' random choices.")
flags.DEFINE_boolean("save_images", True, "Save the attacked images as PNG in <output_dir>/images.")

FLAGS = flags.FLAGS


def _reference_homography(folder: str, pair: str, first, second) -> tuple:
    """Return (homography, description) of a pair: ground truth when given, else RANSAC."""
    first_name, second_name, homography_file = PAIRS[pair]
    if homography_file is not None:
        homography = keypoint_matching.read_homography(os.path.join(folder, homography_file))
        return homography, {"source": f"ground truth ({homography_file})"}
    first_features = keypoint_matching.describe_image(first)
    second_features = keypoint_matching.describe_image(second)
    matches = keypoint_matching.match_features(first_features, second_features)
    homography, inliers = keypoint_matching.estimate_homography(first_features, second_features, matches)
    description = {
        "source": f"estimated with RANSAC (3 px) on the unattacked pair {first_name} / {second_name}",
        "ransac_inliers": inliers,
        "ratio_test_matches": int(len(matches)),
    }
    return homography, description


def _evaluate_pair(folder: str, pair: str) -> dict:
    first_name, second_name, _ = PAIRS[pair]
    first = images.load_image(os.path.join(folder, first_name))
    second = images.load_image(os.path.join(folder, second_name))
    homography, homography_description = _reference_homography(folder, pair, first, second)
    second_features = keypoint_matching.describe_image(second)
    original = keypoint_matching.match_pair(first, second, homography, second_features=second_features)
    logging.info("%s: unattacked pair has %d matches, %d correct.", pair, original["matches"], original["correct_matches"])

    result = {
        "first_image": first_name,
        "second_image": second_name,
        "image_size": [int(first.shape[1]), int(first.shape[0])],
        "homography": homography_description | {"matrix": homography.tolist()},
        "original": original,
        "attacks": {},
    }
    for attack in FLAGS.attacks:
        start = time.perf_counter()
        attacked, report = registry.apply_query_modification(attack, first, None, FLAGS.seed)
        seconds = time.perf_counter() - start
        matched = keypoint_matching.match_pair(attacked, second, homography, second_features=second_features)
        correct_drop = 1.0 - matched["correct_matches"] / max(original["correct_matches"], 1)
        result["attacks"][attack] = {
            "keypoints_before": report["keypoints_before"],
            "keypoints_after": report["keypoints_after"],
            "removed_fraction": report["removed_fraction"],
            "forged": report["forged"],
            "matches": matched["matches"],
            "correct_matches": matched["correct_matches"],
            "correct_match_drop": correct_drop,
            "psnr": report["psnr"],
            "ssim": report["ssim"],
            "max_abs_change": report["max_abs_change"],
            "colour_recovery": report.get("colour_recovery"),
            "details": report.get("attack"),
            "seconds": seconds,
        }
        logging.info(
            "%s %s: %.0f%% of keypoints removed, correct matches %d -> %d, SSIM %.3f, %.1f s.",
            pair, attack, 100 * report["removed_fraction"], original["correct_matches"],
            matched["correct_matches"], report["ssim"], seconds,
        )
        if FLAGS.save_images:
            stem = os.path.splitext(first_name)[0]
            images.save_image(os.path.join(FLAGS.output_dir, "images", f"{stem}_{attack.replace('+', '_')}.png"), attacked)
    return result


def _markdown(results: dict) -> str:
    lines = [
        "# Keypoint attacks on SIFT matching (sift_pairs)",
        "",
        f"Command: `{results['command']}`",
        "",
        "The first image of each pair is attacked and matched (OpenCV SIFT, Lowe ratio 0.8) against the "
        "unchanged second image; a match is correct when the homography maps it within 3 px. "
        "Removed: share of the first image's keypoint locations no longer detected. Forged: detected "
        "keypoints that match no original one. SSIM and PSNR compare the attacked and original first image.",
        "",
    ]
    for pair, result in results["pairs"].items():
        original = result["original"]
        lines += [
            f"## {pair}: {result['first_image']} -> {result['second_image']} "
            f"({result['image_size'][0]}x{result['image_size'][1]})",
            "",
            f"Homography: {result['homography']['source']}.",
            "",
            f"Unattacked: {original['keypoints_first']} keypoints (one per orientation), {original['matches']} matches, "
            f"{original['correct_matches']} correct.",
            "",
            "| attack | removed | forged | matches | correct | correct drop | PSNR dB | SSIM | time s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for attack, row in result["attacks"].items():
            psnr = "inf" if row["psnr"] is None else f"{row['psnr']:.2f}"
            lines.append(
                f"| {attack} | {100 * row['removed_fraction']:.1f}% | {row['forged']} | {row['matches']} | "
                f"{row['correct_matches']} | {100 * row['correct_match_drop']:.1f}% | {psnr} | "
                f"{row['ssim']:.4f} | {row['seconds']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    unknown = [pair for pair in FLAGS.pairs if pair not in PAIRS] + [
        attack for attack in FLAGS.attacks if attack not in KEYPOINT_ATTACKS
    ]
    if unknown:
        raise app.UsageError(f"Unknown pairs or attacks {unknown}; pairs: {list(PAIRS)}, attacks: {list(KEYPOINT_ATTACKS)}.")
    folder = os.path.join(datasets.resolve_data_root(FLAGS.data_root), "sift_pairs")
    logging.info("Keypoint attacks %s on pairs %s from %s, seed %d.", FLAGS.attacks, FLAGS.pairs, folder, FLAGS.seed)

    command = (
        f"python -m experiments.keypoint_attack_pairs --data_root {os.path.dirname(folder)} "
        f"--output_dir {FLAGS.output_dir} --pairs {','.join(FLAGS.pairs)} --attacks {','.join(FLAGS.attacks)} "
        f"--seed {FLAGS.seed}"
    )
    results = {
        "command": command,
        "settings": {attack: dataclasses.asdict(registry.make_config(attack)) for attack in FLAGS.attacks},
        "pairs": {},
    }
    for pair in FLAGS.pairs:
        results["pairs"][pair] = _evaluate_pair(folder, pair)
        atomic_io.write_json_atomic(os.path.join(FLAGS.output_dir, "results.json"), results)
    atomic_io.write_text_atomic(os.path.join(FLAGS.output_dir, "results.md"), _markdown(results))
    logging.info("Wrote %s.", os.path.join(FLAGS.output_dir, "results.md"))


if __name__ == "__main__":
    app.run(main)
