"""Attack a set of queries with PIRE: group by shape, batch, save 8-bit images, record, resume.

Queries of equal shape are attacked together in batches of at most `batch_size`; each
(shape, batch size) pair compiles once. A short last batch is not padded, because one
extra compile costs less than attacking padding copies for hundreds of steps. Each query's PRNG key is folded from the seed and the query's index in the
dataset, so its perturbation does not depend on which other queries share its batch.
"""

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from pire_jax import images as images_lib
from pire_jax.attacks import pire_outputs
from pire_jax.attacks.pire import pire_attack, resolve_loop
from pire_jax.attacks.pire_config import PireConfig
from pire_jax.pipeline.adversarial_store import AdversarialStore


@dataclasses.dataclass(frozen=True)
class PreparedQuery:
    """A query ready to attack.

    Attributes:
      index: position of the query in the dataset (seeds its PRNG key).
      name: query name, used for file names.
      image: uint8 (H, W, 3), the exact image that is attacked and compared against.
    """

    index: int
    name: str
    image: np.ndarray


def query_key(seed: int, query_index: int) -> jax.Array:
    """PRNG key of one query: the seed's key folded with the query's dataset index."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), query_index)


def group_by_shape(queries: Sequence[PreparedQuery]) -> dict[tuple[int, ...], list[PreparedQuery]]:
    """Group queries by image shape, keeping dataset order inside each group."""
    groups: dict[tuple[int, ...], list[PreparedQuery]] = {}
    for query in queries:
        groups.setdefault(query.image.shape, []).append(query)
    return groups


def _batches(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def attack_queries_with_pire(
    apply_fn: Callable[[Any, Any], Any],
    convention,
    params: Any,
    queries: Sequence[PreparedQuery],
    config: PireConfig,
    store: AdversarialStore,
    output_rule: str,
    seed: int,
    batch_size: int,
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """Attack every unfinished query, save its adversarial images and record it as finished.

    Args:
      apply_fn: hashable descriptor function (params, network input) -> descriptors.
      convention: the network's input convention.
      params: network parameters.
      queries: the queries to attack; finished ones (per `store`) are skipped.
      config: PIRE settings; `config.save_steps` must equal `store.steps`.
      store: output layout and resume state.
      output_rule: one of `pire_outputs.OUTPUT_RULES`.
      seed: base seed of the per-query keys.
      batch_size: maximum number of queries attacked at once.
      jpeg_quality: JPEG quality when the store saves JPEG.

    Returns:
      {"attacked": names attacked now, "skipped": names already finished,
       "compile_seconds": {shape: seconds of the first step, compile included}}.
    """
    if tuple(config.save_steps) != store.steps:
        raise ValueError(f"PIRE save_steps {config.save_steps} differ from the store's steps {store.steps}.")
    if batch_size < 1:
        raise ValueError(f"Invalid batch size {batch_size}; expected at least 1.")
    skipped = [query.name for query in queries if store.is_finished(query.name)]
    pending = [query for query in queries if not store.is_finished(query.name)]
    if skipped:
        logging.info("Resuming: %d queries already finished, %d to attack.", len(skipped), len(pending))
    groups = group_by_shape(pending)
    logging.info(
        "PIRE on %d queries in %d shapes, batch size %d, %d steps, loop %s.",
        len(pending), len(groups), batch_size, config.steps, resolve_loop(config),
    )

    attacked: list[str] = []
    compile_seconds: dict[str, float] = {}
    done_before = len(skipped)
    total = len(queries)
    for shape, group in groups.items():
        shape_label = f"{shape[0]}x{shape[1]}"
        for batch in _batches(group, batch_size):
            images = np.stack([query.image for query in batch])
            keys = np.stack([np.asarray(query_key(seed, query.index)) for query in batch])

            timings = _StepTimer(shape_label, config.steps, first_of_shape=shape_label not in compile_seconds)
            start = time.perf_counter()
            result = pire_attack(apply_fn, convention, params, images, keys, config, progress=timings)
            perturbations = np.asarray(jax.device_get(result.perturbations))
            objectives = np.asarray(jax.device_get(result.objectives))
            seconds = time.perf_counter() - start
            if np.isnan(timings.first_step_seconds):
                # The in-jit loops report no per-step progress: time the whole call instead.
                timings.first_step_seconds = seconds
                timings.whole_call_seconds_per_step = seconds / config.steps
            if shape_label not in compile_seconds:
                compile_seconds[shape_label] = timings.first_step_seconds
                logging.info("Compiled the attack for shape %s (first step with compile: %.1f s).", shape_label, timings.first_step_seconds)

            for position, query in enumerate(batch):
                _save_query(query, perturbations[:, position], objectives[:, position], store, output_rule, jpeg_quality,
                            seconds / len(batch), timings)
                attacked.append(query.name)
            done = done_before + len(attacked)
            logging.info(
                "Attacked %d/%d queries (%s, batch of %d in %.1f s, %.3f s per step).",
                done, total, shape_label, len(batch), seconds, timings.seconds_per_step(),
            )
    return {"attacked": attacked, "skipped": skipped, "compile_seconds": compile_seconds}


def _save_query(query, perturbations, objectives, store, output_rule, jpeg_quality, seconds, timings) -> None:
    per_step = {}
    for step, perturbation, objective in zip(store.steps, perturbations, objectives):
        adversarial = pire_outputs.adversarial_image(query.image, perturbation, output_rule)
        images_lib.save_image(store.image_path(query.name, step), adversarial, store.save_format, jpeg_quality)
        per_step[str(step)] = {
            "objective": float(objective),
            "perturbation_linf_grey_levels": float(np.abs(perturbation).max()),
        }
    store.mark_finished(
        query.name,
        {
            "query": query.name,
            "shape": list(query.image.shape),
            "seconds": seconds,
            "seconds_per_step": timings.seconds_per_step(),
            "steps": per_step,
        },
    )


class _StepTimer:
    """Progress callback of the Python attack loop: times steps and logs now and then."""

    def __init__(self, shape_label: str, steps: int, first_of_shape: bool):
        self.shape_label = shape_label
        self.steps = steps
        self.first_of_shape = first_of_shape
        self.first_step_seconds = float("nan")
        self._start = time.perf_counter()
        self._after_first = None
        self._last = None
        self.whole_call_seconds_per_step = float("nan")

    def __call__(self, step: int, objectives) -> None:
        now = time.perf_counter()
        if step == 1:
            jax.block_until_ready(objectives)
            now = time.perf_counter()
            self.first_step_seconds = now - self._start
            self._after_first = now
        self._last = (step, now)
        seconds_per_step = self.seconds_per_step()
        if np.isnan(seconds_per_step):
            speed = f"first step {now - self._start:.1f} s with compilation"
        else:
            speed = f"{seconds_per_step:.3f} s per step"
        logging.log_every_n_seconds(
            logging.INFO,
            "  %s: step %d/%d, objective %.4g (batch mean), %s",
            30,
            self.shape_label, step, self.steps, float(np.mean(objectives)), speed,
        )

    def seconds_per_step(self) -> float:
        """Mean wall time of the steps after the first (which includes compilation)."""
        if self._after_first is None and not np.isnan(self.whole_call_seconds_per_step):
            return self.whole_call_seconds_per_step
        if self._after_first is None or self._last is None or self._last[0] <= 1:
            return float("nan")
        return (self._last[1] - self._after_first) / (self._last[0] - 1)

