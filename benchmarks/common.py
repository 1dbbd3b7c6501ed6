"""Helpers shared by the PIRE speed benchmarks: CPU limits, timing, XLA FLOP counts, test inputs and result files.

The benchmarks are programs that print figures, not tests. Each one times code
that is already compiled and reports compilation apart.
"""

import dataclasses
import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from pire_jax import atomic_io, images
from pire_jax.attacks.pire import pire_attack
from pire_jax.attacks.pire_config import paper_config
from pire_jax.models import InputConvention, RetrievalNetwork
from pire_jax.models.retrieval_network import NetworkSpec, expected_param_shapes

# Names of the image shapes that `image_shape` builds from a long side.
ASPECTS = ("square", "4:3")

# Scale of the last BatchNorm of each ResNet bottleneck in random networks, so that
# the residual sum does not grow by 2x per block over 33 blocks.
RANDOM_RESNET_LAST_BN_SCALE = 0.3


def limit_cpu_threads(threads: int) -> int:
    """Pin this process to the first `threads` CPUs it may use, and return how many it now uses.

    XLA:CPU and PyTorch size their thread pools from the CPU affinity mask, so this
    gives both frameworks the same number of threads. It must run before JAX
    creates its CPU backend, i.e. before the first JAX computation. 0 keeps every CPU.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if threads <= 0 or threads >= len(allowed):
        return len(allowed)
    os.sched_setaffinity(0, allowed[:threads])
    logging.info("Pinned to CPUs %s.", allowed[:threads])
    return threads


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or platform.processor() where that file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """Return the facts that a timing depends on: CPU, usable cores, load, software versions and JAX backend."""
    description = {
        "cpu": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
    }
    return description


def block(tree: Any) -> Any:
    """Wait until every array in `tree` is computed, and return `tree`."""
    return jax.block_until_ready(tree)


def seconds_of(function: Callable[[], Any]) -> float:
    """Run `function` once, wait for its JAX results, and return the wall-clock seconds it took."""
    start = time.perf_counter()
    block(function())
    return time.perf_counter() - start


def compiled_flops(function: Callable[..., Any], *args: Any) -> float | None:
    """Return the FLOPs of `function(*args)` from XLA's cost analysis of the compiled program.

    The count comes from `jax.jit(function).lower(*args).compile().cost_analysis()`
    ("flops": a multiply-add counts as 2, and convolution taps on zero padding are
    not counted). It is None where the backend does not report it.
    """
    analysis = jax.jit(function).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older JAX versions return one dict per device program.
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        logging.warning("XLA reported no FLOP count for %s.", getattr(function, "__name__", function))
        return None
    return float(analysis["flops"])


def forward_and_gradient_flops(network: RetrievalNetwork, batch: int, height: int, width: int) -> dict[str, float | None]:
    """Count the FLOPs of one descriptor forward pass and of one value_and_grad with respect to the input.

    Both are for a batch of `batch` network inputs (height, width, 3). The gradient
    program differentiates sum((f(x) - d)^2), the PIRE objective, so its count is
    the work of one attack iteration without the Adam update.
    """
    network_input = jnp.zeros((batch, height, width, 3), jnp.float32)
    target = jnp.zeros((batch, network.descriptor_dim), jnp.float32)

    def forward(params, x):
        return network.apply(params, x)

    def objective(x, params):
        return jnp.sum((network.apply(params, x) - target) ** 2)

    def value_and_input_gradient(params, x):
        return jax.value_and_grad(objective)(x, params)

    return {
        "forward": compiled_flops(forward, network.params, network_input),
        "value_and_grad": compiled_flops(value_and_input_gradient, network.params, network_input),
    }


class PireIterationTimer:
    """Timer of the public `pire_attack` (preset `paper`) that derives seconds per iteration.

    The attack runs at T = `steps` and at T = 1. Seconds per iteration are
    (t(T) - t(1)) / (T - 1), with t the fastest steady call, which removes the work
    done once per attack (clean descriptor, final snapshot). Compile seconds are the
    first call of an attack minus its fastest steady call. Callers may interleave
    `measure_once` with other timings, so that load changes on a shared machine hit
    every contestant alike.
    """

    def __init__(self, network: RetrievalNetwork, query_images: np.ndarray, keys: jax.Array, loop: str, steps: int,
                 scan_unroll: int = 10):
        if steps < 2:
            raise ValueError(f"Invalid steps {steps}; expected at least 2, because the short attack has T = 1.")
        self.loop = loop
        self.steps = steps
        self._runs = {count: self._attack(network, query_images, keys, count, scan_unroll) for count in (steps, 1)}
        self._first: dict[int, float] = {}
        self._steady: dict[int, list[float]] = {steps: [], 1: []}

    def _attack(self, network, query_images, keys, steps, scan_unroll) -> Callable[[], Any]:
        config = dataclasses.replace(paper_config(steps=steps), loop=self.loop, scan_unroll=scan_unroll)

        def run():
            return pire_attack(network.apply, network.input_convention, network.params, query_images, keys, config)

        return run

    def compile(self) -> None:
        """Make the first (compiling) call of both attacks and record its seconds."""
        for count, run in self._runs.items():
            self._first[count] = seconds_of(run)

    def measure_once(self) -> None:
        """Time one steady call of each attack."""
        for count, run in self._runs.items():
            self._steady[count].append(seconds_of(run))

    def summary(self) -> dict[str, float]:
        """Return seconds per iteration (NaN when t(T) <= t(1)), its upper bound t(T) / T, and compile seconds."""
        steady_long, steady_short = min(self._steady[self.steps]), min(self._steady[1])
        seconds_per_iteration = (steady_long - steady_short) / (self.steps - 1)
        if seconds_per_iteration <= 0:
            # NOTE: on a loaded machine the T = 1 call can take longer than the T-step one, so more steps help.
            logging.warning("%s loop: t(T=%d) <= t(T=1); no per-iteration time. Use more steps.", self.loop, self.steps)
            seconds_per_iteration = float("nan")
        return {
            "seconds_per_iteration": seconds_per_iteration,
            # Always valid, because t(T) also contains the once-per-attack work.
            "seconds_per_iteration_upper_bound": steady_long / self.steps,
            "compile_seconds": self._first[self.steps] - steady_long,
            "compile_seconds_one_step_program": self._first[1] - steady_short,
            "attack_seconds_T": steady_long,
            "attack_seconds_T1": steady_short,
        }


def time_pire_iterations(
    network: RetrievalNetwork, query_images: np.ndarray, keys: jax.Array, loop: str, steps: int, repeats: int,
    scan_unroll: int = 10,
) -> dict[str, float]:
    """Time `pire_attack` with `PireIterationTimer` over `repeats` steady calls and return its summary."""
    timer = PireIterationTimer(network, query_images, keys, loop, steps, scan_unroll)
    timer.compile()
    for _ in range(max(1, repeats)):
        timer.measure_once()
    return timer.summary()


def random_network(arch: str, convention: InputConvention, seed: int = 0) -> RetrievalNetwork:
    """Build a GeM network with random He-normal weights, for timing.

    Weights are drawn with NumPy from the variable shapes, which avoids Flax's
    op-by-op initialisation (seconds for ResNet-101). BatchNorm layers are identities
    except the last one of each bottleneck, which is scaled down so that activations
    stay finite through all blocks.
    """
    spec = NetworkSpec(arch=arch, input_convention=convention)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in expected_param_shapes(spec).items():
        leaf = path[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[path] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        elif leaf == "p":
            flat[path] = np.full(shape, 3.0, np.float32)
        elif leaf in ("scale", "var"):
            value = RANDOM_RESNET_LAST_BN_SCALE if leaf == "scale" and path[-2] == "bn3" else 1.0
            flat[path] = np.full(shape, value, np.float32)
        else:  # bias, BatchNorm mean
            flat[path] = np.zeros(shape, np.float32)
    return RetrievalNetwork.from_params(arch, traverse_util.unflatten_dict(flat), convention)


def image_shape(long_side: int, aspect: str) -> tuple[int, int]:
    """Return (height, width) in pixels: square, or landscape 4:3 with `long_side` as the width."""
    if aspect == "square":
        return long_side, long_side
    if aspect == "4:3":
        return int(round(long_side * 3 / 4)), long_side
    raise ValueError(f"Invalid aspect {aspect!r}; expected one of {ASPECTS}.")


def smooth_test_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return `count` uint8 RGB images (count, H, W, 3): smooth random colour fields plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 255.0, (count, 6, 6, 3))
    rows = np.linspace(0, 5, height)
    columns = np.linspace(0, 5, width)
    smooth = np.empty((count, height, width, 3))
    for index in range(count):
        for channel in range(3):
            # Bilinear upsampling of the 6x6 field, separably along rows and columns.
            along_rows = np.stack([np.interp(rows, np.arange(6), coarse[index, :, column, channel]) for column in range(6)], 1)
            smooth[index, :, :, channel] = np.stack([np.interp(columns, np.arange(6), row) for row in along_rows])
    noisy = smooth + rng.normal(0.0, 20.0, smooth.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def load_test_image(path: str | None, long_side: int, seed: int = 0) -> np.ndarray:
    """Return a uint8 RGB test image: the file at `path` downscaled to `long_side`, or a smooth random square image."""
    if path:
        return images.resize_long_side(images.load_image(path), long_side)
    return smooth_test_images(1, long_side, long_side, seed)[0]


def format_number(value: float | None, digits: int = 3) -> str:
    """Format a number for a Markdown table with `digits` significant digits, or "-" when missing."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render a Markdown table with one header row."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def finite_or_none(value: Any) -> Any:
    """Return a copy of nested dicts and lists with NaN and infinite floats replaced by None, for strict JSON."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_results(output_dir: str | None, stem: str, data: dict[str, Any], markdown: str) -> None:
    """Write `<stem>.json` and `<stem>.md` atomically under `output_dir`; do nothing when it is unset."""
    if not output_dir:
        return
    json_path = os.path.join(output_dir, f"{stem}.json")
    markdown_path = os.path.join(output_dir, f"{stem}.md")
    atomic_io.write_json_atomic(json_path, finite_or_none(data))
    atomic_io.write_text_atomic(markdown_path, markdown)
    logging.info("Wrote %s and %s.", json_path, markdown_path)
