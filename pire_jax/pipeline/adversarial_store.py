"""On-disk layout of an attack run, and the bookkeeping that lets a killed run resume.

    <output_dir>/
      run_config.json          settings that change the adversarial images
      jpg/<query>.<ext>        adversarial queries after the final iteration
      T<t>/jpg/<query>.<ext>   snapshots after earlier iterations t (PIRE --save_steps)
      finished/<query>.json    per-query record, written after all of its images
      results.json, results.md, examples.png

A query counts as finished only when its record exists, and the record is written
atomically after every image of that query, each itself written atomically. A run
killed at any moment therefore never leaves a half-written image that a rerun would
read as finished: the rerun attacks that query again.
"""

import json
import os
from typing import Any, Sequence

from pire_jax import atomic_io

RUN_CONFIG_FILE = "run_config.json"
FINISHED_FOLDER = "finished"
EXTENSIONS = {"png": ".png", "jpeg": ".jpg"}


class RunConfigMismatchError(ValueError):
    """The output folder contains a run with different settings."""


class AdversarialStore:
    """Paths and resume state of one attack run.

    Args:
      output_dir: the run's folder.
      steps: the iterations whose adversarial queries are kept, increasing; the last
        one goes to `jpg/`, the others to `T<t>/jpg/`. Attacks without iterations
        use a single entry.
      save_format: "png" or "jpeg".
    """

    def __init__(self, output_dir: str, steps: Sequence[int], save_format: str):
        if save_format not in EXTENSIONS:
            raise ValueError(f"Invalid save format {save_format!r}; expected one of {sorted(EXTENSIONS)}.")
        self.output_dir = output_dir
        self.steps = tuple(steps)
        self.save_format = save_format
        self.extension = EXTENSIONS[save_format]

    @property
    def final_step(self) -> int:
        return self.steps[-1]

    def query_folder(self, step: int) -> str:
        """Folder of the adversarial queries after `step` iterations."""
        if step == self.final_step:
            return os.path.join(self.output_dir, "jpg")
        return os.path.join(self.output_dir, f"T{step}", "jpg")

    def image_path(self, query_name: str, step: int) -> str:
        return os.path.join(self.query_folder(step), query_name + self.extension)

    def _record_path(self, query_name: str) -> str:
        return os.path.join(self.output_dir, FINISHED_FOLDER, query_name + ".json")

    def is_finished(self, query_name: str) -> bool:
        """Tell whether the query has its record and every image it promises."""
        if not os.path.isfile(self._record_path(query_name)):
            return False
        return all(os.path.isfile(self.image_path(query_name, step)) for step in self.steps)

    def mark_finished(self, query_name: str, record: dict[str, Any]) -> None:
        """Record a query as finished; call only after all of its images are written."""
        missing = [step for step in self.steps if not os.path.isfile(self.image_path(query_name, step))]
        if missing:
            raise RuntimeError(f"Query {query_name} cannot be marked finished: images for steps {missing} are missing.")
        atomic_io.write_json_atomic(self._record_path(query_name), record)

    def finished_record(self, query_name: str) -> dict[str, Any]:
        with open(self._record_path(query_name), encoding="utf-8") as stream:
            return json.load(stream)

    def check_run_config(self, run_config: dict[str, Any]) -> None:
        """Store the run's settings, or check them against those of an earlier run in the same folder.

        Raises:
          RunConfigMismatchError: the folder contains results made with other
            settings, which a resumed run must not mix with its own.
        """
        path = os.path.join(self.output_dir, RUN_CONFIG_FILE)
        canonical = json.loads(json.dumps(run_config))
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as stream:
                previous = json.load(stream)
            if previous != canonical:
                changed = sorted(_changed_paths(previous, canonical))
                raise RunConfigMismatchError(
                    f"{self.output_dir} contains a run with other settings (changed: {changed}). "
                    "Use a new --output_dir, or rerun with the earlier settings to resume it."
                )
            return
        atomic_io.write_json_atomic(path, canonical)


def _changed_paths(previous: Any, current: Any, prefix: str = "") -> list[str]:
    """List the dotted paths of the settings that differ between two JSON values."""
    if isinstance(previous, dict) and isinstance(current, dict):
        paths = []
        for key in set(previous) | set(current):
            paths += _changed_paths(previous.get(key), current.get(key), f"{prefix}{key}.")
        return paths
    return [] if previous == current else [prefix.rstrip(".")]
