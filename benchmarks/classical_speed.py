"""Measure the classical extractors at 1024 px and inverted-file queries, and write a Markdown page.

Example:
  python benchmarks/classical_speed.py --data_root /path/to/data --dataset landmarks48 \
      --codebook_training_dataset ukbench56 --codebook_size 2000 \
      --output benchmarks/RESULTS_classical.md
"""

import os
import platform
import sys
import time

import cv2
import faiss
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import classical_flags  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax import atomic_io, images  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.datasets import load_dataset  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.global_features import cedd, gist  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.local_features import inverted_file, sift  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.retrieval import make_system  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_string("data_root", None, "Folder of the datasets; unset reads PIRE_DATA_ROOT.")
flags.DEFINE_string("dataset", "landmarks48", "Dataset whose images are timed and indexed.")
flags.DEFINE_integer("image_side", 1024, "Long side, in pixels, of the images the extractors are timed on.")
flags.DEFINE_integer("timed_images", 12, "Number of images each extractor is timed on.")
flags.DEFINE_list("replications", ["1", "4", "16"],
                  "Inverted-file sizes to time, as multiples of the dataset's database (copies of its descriptors).")
flags.DEFINE_integer("repeats", 3, "Each timing is repeated this many times and the fastest run is reported.")
flags.DEFINE_string("output", None, "Markdown page to write the results to; unset only logs them.")

FLAGS = flags.FLAGS


def images_at_side(dataset, count: int, side: int) -> list[np.ndarray]:
    """Return up to `count` database images whose long side is at least `side`, downscaled to exactly `side`."""
    chosen = []
    for index in range(len(dataset.image_names)):
        image = dataset.load_database_image(index)
        if max(image.shape[:2]) >= side:
            chosen.append(images.resize_long_side(image, side))
        if len(chosen) == count:
            break
    if not chosen:
        raise ValueError(f"No image of {dataset.name} has a long side of {side} pixels or more; lower --image_side.")
    return chosen


def fastest_seconds(function, inputs) -> float:
    """Return the fastest of --repeats runs of `function` over all inputs, after one warm-up call, in seconds."""
    function(inputs[0])
    runs = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        for item in inputs:
            function(item)
        runs.append(time.perf_counter() - start)
    return min(runs)


def images_per_second(function, inputs) -> float:
    """Return the number of inputs `function` processes per second in the fastest run."""
    return len(inputs) / fastest_seconds(function, inputs)


def time_extractors(test_images: list[np.ndarray], sift_system) -> list[tuple[str, float]]:
    """Return (extractor, images per second) for SIFT, SIFT+HE, CEDD and GIST."""
    sift_config = sift_system.sift_config
    gist_grey = gist.GistExtractor(gist.GistConfig())
    gist_colour = gist.GistExtractor(gist.GistConfig(colour=True))
    return [
        ("SIFT (OpenCV, keypoints + descriptors)", images_per_second(lambda image: sift.extract_sift(image, sift_config),
                                                                     test_images)),
        ("SIFT + word assignment + HE signatures",
         images_per_second(lambda image: sift_system.describe_query(image, None), test_images)),
        ("CEDD (LIRE rules, 40x40 blocks)", images_per_second(cedd.cedd_histogram, test_images)),
        ("GIST grey (512-d)", images_per_second(gist_grey, test_images)),
        ("GIST colour (960-d)", images_per_second(gist_colour, test_images)),
    ]


def time_queries(sift_system, database, queries, replications: list[int]) -> list[dict]:
    """Time HE queries against inverted files made of `r` copies of the database, for each r."""
    rows = []
    for copies in replications:
        replicated = list(database) * copies
        index = inverted_file.build_inverted_file(
            [descriptor.words for descriptor in replicated],
            [descriptor.signatures for descriptor in replicated],
            sift_system.vocabulary_config.n_words,
        )
        touched = [int(inverted_file.gather_postings(index, query.words)[0].shape[0]) for query in queries]
        seconds = fastest_seconds(
            lambda query: inverted_file.score_query(index, query.words, query.signatures, sift_system.matching),
            queries,
        ) / len(queries)
        rows.append({
            "images": index.n_images,
            "postings": int(index.posting_images.shape[0]),
            "touched": float(np.mean(touched)),
            "query_ms": 1000.0 * seconds,
            "ns_per_touched": 1e9 * seconds / max(float(np.mean(touched)), 1.0),
        })
        logging.info("Inverted file of %d images: %.2f ms per query.", index.n_images, 1000.0 * seconds)
    return rows


def format_page(extractor_rows, query_rows, setup: dict) -> str:
    """Render the results as a Markdown page."""
    lines = [
        "# Classical systems: speed",
        "",
        "Written by `benchmarks/classical_speed.py`. Each number is the fastest of several runs on the",
        "machine below. The machine is shared, so the numbers change with its load.",
        "",
        "## Setup",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in setup.items()]
    lines += ["", f"## Extractors at {setup['image side']} px (long side)", "", "| extractor | images per second |",
              "|---|---|"]
    lines += [f"| {name} | {rate:.2f} |" for name, rate in extractor_rows]
    lines += [
        "",
        "## Inverted-file queries (Hamming Embedding, all database descriptors replicated r times)",
        "",
        "| database images | postings | postings touched per query | ms per query | ns per touched posting |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['images']} | {row['postings']} | {row['touched']:.0f} | {row['query_ms']:.2f} | "
        f"{row['ns_per_touched']:.1f} |"
        for row in query_rows
    ]
    first, last = query_rows[0], query_rows[-1]
    lines += [
        "",
        "A query reads only the posting lists of its own words. From the smallest to the largest file,",
        f"images grow {last['images'] / first['images']:.0f}x, touched postings "
        f"{last['touched'] / max(first['touched'], 1.0):.1f}x and query time {last['query_ms'] / first['query_ms']:.1f}x.",
        "Query features are scored in chunks of at most "
        f"{inverted_file.MAX_POSTINGS_PER_CHUNK} touched postings, which bounds the temporary memory.",
        "",
    ]
    return "\n".join(lines)


def main(argv):
    del argv
    system_options = classical_flags.classical_system_options("sift_he", data_root=FLAGS.data_root)
    sift_system = make_system("sift_he", **system_options)
    dataset = load_dataset(FLAGS.data_root, FLAGS.dataset)

    test_images = images_at_side(dataset, FLAGS.timed_images, FLAGS.image_side)
    logging.info("Timing extractors on %d images of %s at %d px.", len(test_images), dataset.name, FLAGS.image_side)
    _ = sift_system.vocabulary  # Load or train the codebook now, so that timing excludes it.
    extractor_rows = time_extractors(test_images, sift_system)
    for name, rate in extractor_rows:
        logging.info("%s: %.2f images per second.", name, rate)

    database = sift_system.describe_database([dataset.load_database_image(i) for i in range(len(dataset.image_names))])
    queries = [sift_system.describe_query(dataset.load_query(q, "wi"), None) for q in range(len(dataset.query_names))]
    query_rows = time_queries(sift_system, database, queries, [int(value) for value in FLAGS.replications])

    setup = {
        "command": "`python benchmarks/classical_speed.py " + " ".join(sys.argv[1:]) + "`",
        "dataset": f"{dataset.name} ({len(dataset.image_names)} images, {len(dataset.query_names)} queries)",
        "image side": FLAGS.image_side,
        "timed images": len(test_images),
        "runs per timing (fastest kept)": FLAGS.repeats,
        "codebook": f"{sift_system.vocabulary_config.n_words} words trained on {FLAGS.codebook_training_dataset}",
        "matching": str(sift_system.matching),
        "CPU": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible",
        "threads": f"OpenCV {cv2.getNumThreads()}, faiss {faiss.omp_get_max_threads()}",
        "software": f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}, "
                    f"faiss {faiss.__version__}",
    }
    page = format_page(extractor_rows, query_rows, setup)
    print(page)
    if FLAGS.output:
        atomic_io.write_text_atomic(FLAGS.output, page)
        logging.info("Wrote %s.", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
