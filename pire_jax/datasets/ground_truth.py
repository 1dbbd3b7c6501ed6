"""Ground truth of retrieval benchmarks: cirtorch/revisitop pickles and the original Oxford/Paris text files.

Two protocols exist and both are read into the same revisitop-style structure, one
dict per query with index arrays into the database image list:
  * old protocol (cirtorch `gnd_oxford5k.pkl`, `gnd_paris6k.pkl`): `ok` (positives:
    good + ok) and `junk` (ignored when ranking);
  * revisited protocol (revisitop `gnd_roxford5k.pkl`): `easy`, `hard` and `junk`, from
    which the Easy, Medium and Hard evaluations are formed.
Every query also carries `bbx` = [x1, y1, x2, y2] in pixels of the query image.

References:
  Philbin et al., "Object retrieval with large vocabularies and fast spatial matching", CVPR 2007 (Oxford5k).
  Radenovic et al., "Revisiting Oxford and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
"""

import dataclasses
import glob
import os
import pickle
import re
from typing import Any, Sequence

import numpy as np

from pire_jax.datasets import safe_pickle

OLD_PROTOCOL = "old"
REVISITED_PROTOCOL = "revisited"

_OLD_KEYS = ("ok", "junk")
_REVISITED_KEYS = ("easy", "hard", "junk")


class GroundTruthError(ValueError):
    """A ground-truth file that is missing fields, has wrong types or indices out of range."""


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """Database image names, query names and per-query relevance judgements.

    Attributes:
      image_names: database image names without extension (revisitop `imlist`).
      query_names: query image names without extension (`qimlist`).
      queries: one dict per query with `bbx` (tuple of 4 floats or None) and int64
        index arrays into `image_names`: `ok`, `junk` (old protocol) or `easy`,
        `hard`, `junk` (revisited protocol).
      protocol: OLD_PROTOCOL or REVISITED_PROTOCOL.
    """

    image_names: tuple[str, ...]
    query_names: tuple[str, ...]
    queries: tuple[dict[str, Any], ...]
    protocol: str


def _fail(source: str, problem: str) -> GroundTruthError:
    return GroundTruthError(
        f"Malformed ground truth {source}: {problem}. Expected a cirtorch/revisitop ground-truth dict "
        "with 'imlist', 'qimlist' and 'gnd'; re-download or regenerate the file."
    )


def _index_array(value: Any, key: str, query: int, n_images: int, source: str) -> np.ndarray:
    try:
        array = np.asarray(value if value is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise _fail(source, f"query {query}: '{key}' is not a list of indices ({error})") from error
    if array.size and (not np.all(np.isfinite(array)) or not np.all(array == np.round(array))):
        raise _fail(source, f"query {query}: '{key}' contains non-integer indices")
    indices = array.astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n_images):
        raise _fail(
            source,
            f"query {query}: '{key}' index {int(indices.max() if indices.max() >= n_images else indices.min())} "
            f"is outside the {n_images} database images",
        )
    return indices


def _box(value: Any, query: int, source: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        box = tuple(float(coordinate) for coordinate in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as error:
        raise _fail(source, f"query {query}: 'bbx' is not numeric ({error})") from error
    if len(box) != 4 or not box[2] > box[0] or not box[3] > box[1]:
        raise _fail(source, f"query {query}: 'bbx' {list(box)} is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    return box


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple, np.ndarray)) or not all(isinstance(name, str) for name in value):
        raise _fail(source, f"'{key}' is not a list of image names")
    return tuple(value)


def parse_ground_truth(raw: Any, source: str = "<ground truth>") -> GroundTruth:
    """Validate a ground-truth dict and convert its index lists to int64 arrays.

    Args:
      raw: the unpickled dict with `imlist`, `qimlist` and `gnd`.
      source: name of the file, used in error messages.

    Returns:
      The validated `GroundTruth`; the protocol is inferred from the keys of `gnd`.

    Raises:
      GroundTruthError: a field is missing, has the wrong type, or an index is out of range.
    """
    if not isinstance(raw, dict):
        raise _fail(source, f"top level is {type(raw).__name__}, not a dict")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in raw:
            raise _fail(source, f"key '{key}' is missing")
    image_names = _names(raw["imlist"], "imlist", source)
    query_names = _names(raw["qimlist"], "qimlist", source)
    entries = raw["gnd"]
    if not isinstance(entries, (list, tuple)) or len(entries) != len(query_names):
        raise _fail(source, f"'gnd' must be a list with one entry per query ({len(query_names)})")
    if not entries:
        raise _fail(source, "there are no queries")

    first_keys = set(entries[0]) if isinstance(entries[0], dict) else set()
    if set(_REVISITED_KEYS) <= first_keys:
        protocol, keys = REVISITED_PROTOCOL, _REVISITED_KEYS
    elif "ok" in first_keys:
        protocol, keys = OLD_PROTOCOL, _OLD_KEYS
    else:
        raise _fail(source, "query 0 has neither 'ok' (old protocol) nor 'easy'/'hard'/'junk' (revisited protocol)")

    queries = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(source, f"query {index} is {type(entry).__name__}, not a dict")
        missing = [key for key in keys if key not in entry and key != "junk"]
        if missing:
            raise _fail(source, f"query {index} lacks {missing} although query 0 uses the {protocol} protocol")
        query = {"bbx": _box(entry.get("bbx"), index, source)}
        for key in keys:
            query[key] = _index_array(entry.get(key), key, index, len(image_names), source)
        queries.append(query)
    return GroundTruth(image_names, query_names, tuple(queries), protocol)


def load_ground_truth_pickle(path: str | os.PathLike) -> GroundTruth:
    """Read a `gnd_<name>.pkl` file with the restricted unpickler and validate it.

    Raises:
      FileNotFoundError: the file does not exist.
      GroundTruthError: the file is not a valid ground-truth pickle, or it references
        code (rejected by the restricted unpickler).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Ground-truth file not found: {path}. Check --data_root and --dataset.")
    try:
        with open(path, "rb") as stream:
            raw = safe_pickle.load_restricted_pickle(stream)
    except safe_pickle.UnsafePickleError as error:
        raise GroundTruthError(f"Unsafe ground-truth pickle {path}: {error}") from error
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as error:
        raise GroundTruthError(
            f"Cannot read ground-truth pickle {path}: {error}. The file is corrupt or truncated; re-download it."
        ) from error
    return parse_ground_truth(raw, source=path)


_QUERY_FILE = re.compile(r"^(?P<query>.+_\d+)_query\.txt$")
_OXFORD_PREFIX = "oxc1_"  # Query lines of the Oxford text ground truth name images as oxc1_<image>.


def _read_names(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Ground-truth list not found: {path}. The text ground truth is incomplete.")
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


def load_text_ground_truth(folder: str | os.PathLike, image_names: Sequence[str] | None = None) -> GroundTruth:
    """Read the original Oxford (`gt_files_170407`) or Paris (`paris_120310`) text ground truth.

    Each query `<landmark>_<n>` has `<landmark>_<n>_query.txt` (one line: image name,
    optionally prefixed `oxc1_`, then x1 y1 x2 y2) and `_good.txt`, `_ok.txt`, `_junk.txt`
    lists of image names. Queries are ordered by file name, as in cirtorch's pickles.

    Args:
      folder: the folder of text files.
      image_names: the database image list to index into. Defaults to every name
        the text files mention, sorted, which is enough to compare two sources but
        not a full database.

    Returns:
      A `GroundTruth` in the old protocol (`ok` = good + ok, `junk` = junk).

    Raises:
      FileNotFoundError: the folder or one of a query's files is missing.
      GroundTruthError: a query line is malformed or names an image outside `image_names`.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Text ground-truth folder not found: {folder}.")
    query_ids = sorted(
        match.group("query")
        for match in (_QUERY_FILE.match(os.path.basename(path)) for path in glob.glob(os.path.join(folder, "*_query.txt")))
        if match
    )
    if not query_ids:
        raise GroundTruthError(f"Malformed text ground truth {folder}: no '<landmark>_<n>_query.txt' files found.")

    parsed = []
    for query_id in query_ids:
        query_file = os.path.join(folder, f"{query_id}_query.txt")
        lines = _read_names(query_file)
        fields = lines[0].split() if lines else []
        if len(fields) != 5:
            raise GroundTruthError(
                f"Malformed query file {query_file}: expected '<image> x1 y1 x2 y2', got {lines[:1]}."
            )
        name = fields[0][len(_OXFORD_PREFIX) :] if fields[0].startswith(_OXFORD_PREFIX) else fields[0]
        try:
            box = [float(value) for value in fields[1:]]
        except ValueError as error:
            raise GroundTruthError(f"Malformed query file {query_file}: non-numeric box {fields[1:]}.") from error
        positives = _read_names(os.path.join(folder, f"{query_id}_good.txt"))
        positives += _read_names(os.path.join(folder, f"{query_id}_ok.txt"))
        junk = _read_names(os.path.join(folder, f"{query_id}_junk.txt"))
        parsed.append((name, box, positives, junk))

    if image_names is None:
        mentioned = {name for query in parsed for name in [query[0], *query[2], *query[3]]}
        image_names = sorted(mentioned)
    position = {name: index for index, name in enumerate(image_names)}

    def indices(names: list[str], query_id: str) -> list[int]:
        unknown = [name for name in names if name not in position]
        if unknown:
            raise GroundTruthError(
                f"Text ground truth for query {query_id} names {len(unknown)} images outside the database list, "
                f"e.g. {unknown[:3]}."
            )
        return [position[name] for name in names]

    raw = {
        "imlist": list(image_names),
        "qimlist": [query[0] for query in parsed],
        "gnd": [
            {"bbx": box, "ok": indices(positives, query_id), "junk": indices(junk, query_id)}
            for query_id, (_, box, positives, junk) in zip(query_ids, parsed)
        ],
    }
    return parse_ground_truth(raw, source=folder)


def protocol_views(ground_truth: GroundTruth) -> dict[str, list[dict[str, np.ndarray]]]:
    """Return the `ok`/`junk` ground truth of each evaluation of the protocol.

    The old protocol has one evaluation ("map"). The revisited protocol has three,
    formed as revisitop does: Easy (positives easy, junk junk + hard), Medium
    (positives easy + hard, junk junk) and Hard (positives hard, junk junk + easy).
    """
    if ground_truth.protocol == OLD_PROTOCOL:
        return {"map": [{"ok": query["ok"], "junk": query["junk"]} for query in ground_truth.queries]}
    easy, medium, hard = [], [], []
    for query in ground_truth.queries:
        easy.append({"ok": query["easy"], "junk": np.concatenate([query["junk"], query["hard"]])})
        medium.append({"ok": np.concatenate([query["easy"], query["hard"]]), "junk": query["junk"]})
        hard.append({"ok": query["hard"], "junk": np.concatenate([query["junk"], query["easy"]])})
    return {"easy": easy, "medium": medium, "hard": hard}
