"""A PyTorch version of the attack loop of the released PIRE code, for speed and agreement checks against pire_jax.

The released code (github.com/liuzrcc/PIRE, `pire.py`, function `pert_each_im`)
optimises v in ImageNet-normalised RGB units with Adam (lr 1e-4), starting from v
uniform in [-10/255, 10/255], on the loss -sum((f(x + v) - f(x))^2). Two variants
are built here:

  "released": the loop with its defects. The clean image tensor requires grad and
    the clean descriptor f(x) is not detached, so `backward(retain_graph=True)`
    runs back through the retained clean graph at every iteration. The order is the
    released one: forward at the current v, clip v to [-eps, eps], backward, Adam
    step. The forward pass therefore evaluates f at a v up to one Adam step outside
    the ball.
  "fixed": f(x) is computed once under `torch.no_grad()`, only v requires grad, and
    v is clipped after each Adam step, as pire_jax does.

Network weights are frozen (requires_grad False) in both, as in the released code.
The network is VGG16-GeM with the weights of a pire_jax network file, so both
frameworks run the same model. It takes ImageNet-normalised RGB input and converts
it to the network's own input convention (e.g. Caffe BGR) in its first layer.

torch is an optional dependency of pire_jax: it is imported only when needed.

Example:
  python benchmarks/torch_released_loop.py --weights weights/vgg16_gem_keras.msgpack \
      --image_size 224 --steps 10 --variants released,fixed
"""

import dataclasses
import functools
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.attacks.pire_config import (  # noqa: E402  pylint: disable=wrong-import-position
    PAPER_EPS_NORMALISED,
    PAPER_LEARNING_RATE_NORMALISED,
)
from pire_jax.models import RetrievalNetwork, load_network  # noqa: E402  pylint: disable=wrong-import-position
from pire_jax.models.input_convention import (  # noqa: E402  pylint: disable=wrong-import-position
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
)
from pire_jax.models.vgg import VGG16_BLOCKS  # noqa: E402  pylint: disable=wrong-import-position

VARIANTS = ("released", "fixed")
DEFAULT_WEIGHTS = os.path.join("weights", "vgg16_gem_keras.msgpack")

# Flags shared with pire_vs_torch.py, which imports this module.
flags.DEFINE_string("weights", None,
                    f"Converted VGG16-GeM network file; unset reads $PIRE_WEIGHTS_FILE, else {DEFAULT_WEIGHTS}.")
flags.DEFINE_string("image", None, "Attacked image file; unset uses a smooth random square image.")
flags.DEFINE_integer("image_size", 224, "Long side of the attacked image in pixels (a file is downscaled to it).")
flags.DEFINE_integer("steps", 10, "Timed attack iterations (after the warm-up iterations).")
flags.DEFINE_integer("warmup_steps", 2, "Untimed iterations at the start of each torch loop.")
flags.DEFINE_integer("repeats", 2, "Runs of each timing; the fastest is kept.")
flags.DEFINE_list("variants", list(VARIANTS), "Torch loop variants: released (with its defects), fixed.")
flags.DEFINE_integer("threads", 0, "Number of CPUs (CPU affinity) and torch threads to use; 0 uses all.")
flags.DEFINE_integer("seed", 0, "Seed of the initial perturbation v0 and of the random test image.")

FLAGS = flags.FLAGS


def import_torch():
    """Import and return torch, or raise ImportError with the command that installs it."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError(
            "PyTorch is needed for the torch comparison but is not installed. Install it with "
            "`pip install torch` (a CPU build is enough) and rerun."
        ) from error
    return torch


def weights_path() -> str:
    """Return the network file from --weights, $PIRE_WEIGHTS_FILE or the default, checking that it exists."""
    path = FLAGS.weights or os.environ.get("PIRE_WEIGHTS_FILE") or DEFAULT_WEIGHTS
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Network file not found: {path}. Convert one with `python -m weights_conversion` "
                                "and pass it with --weights.")
    return path


def imagenet_to_network_affine(network: RetrievalNetwork) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Return (source channel, scale, offset) per network input channel for ImageNet-normalised RGB input.

    network input[k] = imagenet[source[k]] * scale[k] + offset[k], the composition of
    undoing the ImageNet normalisation (to grey levels) and applying the network's
    input convention.
    """
    convention = network.input_convention
    source = list(convention.channel_order)
    std_rgb = np.asarray(IMAGENET_STD_RGB)[source]
    mean_rgb = np.asarray(IMAGENET_MEAN_RGB)[source]
    divisor, mean, std = convention.pixel_divisor, np.asarray(convention.mean), np.asarray(convention.std)
    scale = 255.0 * std_rgb / (divisor * std)
    offset = (255.0 * mean_rgb / divisor - mean) / std
    return source, scale.astype(np.float32), offset.astype(np.float32)


def build_torch_vgg16_gem(network: RetrievalNetwork):
    """Build a torch VGG16-GeM (eval mode, frozen weights) from a pire_jax network's parameters.

    The module maps ImageNet-normalised RGB input (N, 3, H, W) to L2-normalised
    descriptors (N, 512), like cirtorch's ImageRetrievalNet with a GeM pool.
    """
    torch = import_torch()
    nn = torch.nn
    if network.arch != "vgg16" or network.spec.whitening_dim:
        raise ValueError(f"Unsupported network {network.arch} with whitening_dim={network.spec.whitening_dim}. "
                         "The torch loop supports VGG16-GeM without a whitening layer; pass such a network file.")

    features = network.params["params"]["features"]
    layers, in_channels = [], 3
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for index, width in enumerate(widths, start=1):
            conv = nn.Conv2d(in_channels, width, 3, padding=1)
            weights = features[f"conv{block}_{index}"]
            with torch.no_grad():
                # Flax kernels are HWIO, torch's OIHW.
                conv.weight.copy_(torch.from_numpy(np.asarray(weights["kernel"]).transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(np.asarray(weights["bias"]).copy()))
            layers += [conv, nn.ReLU(inplace=True)]
            in_channels = width
        if block < len(VGG16_BLOCKS):
            layers.append(nn.MaxPool2d(2, 2))

    source, scale, offset = imagenet_to_network_affine(network)
    model = _gem_network_class()(nn.Sequential(*layers), network.gem_p, source, scale, offset)
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model.eval()


@functools.lru_cache(maxsize=None)
def _gem_network_class():
    """Return the torch module class of the network, defined on first use because torch is optional."""
    torch = import_torch()

    class TorchGeMNetwork(torch.nn.Module):
        """Input affine map, VGG16 features, GeM pooling (clamp 1e-6) and L2 normalisation (+1e-6), as cirtorch."""

        def __init__(self, features, gem_p, source_channels, scale, offset):
            super().__init__()
            self.features = features
            self.source_channels = list(source_channels)
            self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1))
            self.register_buffer("offset", torch.from_numpy(offset).view(1, 3, 1, 1))
            self.gem_p = float(gem_p)

        def forward(self, imagenet_input):
            network_input = imagenet_input[:, self.source_channels] * self.scale + self.offset
            activations = self.features(network_input).clamp(min=1e-6).pow(self.gem_p)
            pooled = activations.mean(dim=(2, 3)).pow(1.0 / self.gem_p)
            return pooled / (pooled.norm(dim=1, keepdim=True) + 1e-6)

    return TorchGeMNetwork


@dataclasses.dataclass
class LoopRun:
    """Outcome of one torch loop run.

    Attributes:
      objectives: ||f(x + v) - f(x)||^2 at the v of each iteration's forward pass.
      iteration_seconds: wall-clock seconds of each iteration (warm-up included).
      perturbation: final v, float32 (H, W, 3) RGB, ImageNet-normalised units.
    """

    objectives: list[float]
    iteration_seconds: list[float]
    perturbation: np.ndarray


def imagenet_normalise(image_uint8: np.ndarray):
    """Convert a uint8 RGB image (H, W, 3) to an ImageNet-normalised tensor (1, 3, H, W), as torchvision does."""
    torch = import_torch()
    tensor = torch.from_numpy(np.array(image_uint8, copy=True)).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def initial_perturbation(height: int, width: int, seed: int) -> np.ndarray:
    """Draw v0 uniform in [-eps, eps] (eps = 10/255 normalised), float32 (H, W, 3) RGB, as the released code does."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-PAPER_EPS_NORMALISED, PAPER_EPS_NORMALISED, (height, width, 3)).astype(np.float32)


def run_loop(model, image_uint8: np.ndarray, v0: np.ndarray, iterations: int, variant: str) -> LoopRun:
    """Run `iterations` iterations of the torch PIRE loop in the given variant, timing each one.

    Args:
      model: module from `build_torch_vgg16_gem`.
      image_uint8: attacked image, uint8 (H, W, 3) RGB.
      v0: initial perturbation, float32 (H, W, 3) RGB, ImageNet-normalised units.
      iterations: number of Adam iterations.
      variant: "released" (defects kept) or "fixed".
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {VARIANTS}.")
    torch = import_torch()
    eps = PAPER_EPS_NORMALISED
    perturbation = torch.from_numpy(np.ascontiguousarray(v0.transpose(2, 0, 1))).unsqueeze(0).clone()
    perturbation.requires_grad_(True)
    optimizer = torch.optim.Adam([perturbation], lr=PAPER_LEARNING_RATE_NORMALISED)
    image = imagenet_normalise(image_uint8)

    if variant == "released":
        image.requires_grad_(True)  # Defect: gradients also flow into the clean image.
        clean_descriptor = model(image)  # Defect: not detached, so its graph is kept and traversed.
    else:
        with torch.no_grad():
            clean_descriptor = model(image)

    objectives, seconds = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        loss = -torch.sum((model(image + perturbation) - clean_descriptor) ** 2)
        objectives.append(-loss.item())
        optimizer.zero_grad()
        if variant == "released":
            perturbation.data = perturbation.data.clamp(-eps, eps)
            loss.backward(retain_graph=True)
            optimizer.step()
        else:
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                perturbation.clamp_(-eps, eps)
        seconds.append(time.perf_counter() - start)

    final = perturbation.detach().clamp(-eps, eps)[0].permute(1, 2, 0).numpy().copy()
    return LoopRun(objectives, seconds, final)


def seconds_per_iteration(model, image_uint8: np.ndarray, v0: np.ndarray, variant: str, warmup: int, steps: int,
                          repeats: int) -> float:
    """Return the mean seconds per iteration after `warmup` iterations, fastest of `repeats` runs from v0."""
    means = []
    for _ in range(max(1, repeats)):
        run = run_loop(model, image_uint8, v0, warmup + steps, variant)
        means.append(float(np.mean(run.iteration_seconds[warmup:])))
    return min(means)


def setup_from_flags() -> tuple[RetrievalNetwork, Any, np.ndarray, np.ndarray, int]:
    """Pin the CPUs, load the network in both frameworks and prepare the image and v0 from the flags.

    Returns:
      (pire_jax network, torch model, uint8 image (H, W, 3), v0 (H, W, 3), threads).
    """
    threads = common.limit_cpu_threads(FLAGS.threads)
    torch = import_torch()
    torch.set_num_threads(threads)
    unknown = [variant for variant in FLAGS.variants if variant not in VARIANTS]
    if unknown:
        raise app.UsageError(f"Unknown --variants {unknown}; expected names from {VARIANTS}.")

    network = load_network(weights_path())
    model = build_torch_vgg16_gem(network)
    image = common.load_test_image(FLAGS.image, FLAGS.image_size, FLAGS.seed)
    v0 = initial_perturbation(image.shape[0], image.shape[1], FLAGS.seed)
    logging.info("Image %s, %dx%d px, threads: %d, torch %s.", FLAGS.image or "(random)", image.shape[0],
                 image.shape[1], threads, torch.__version__)
    return network, model, image, v0, threads


def main(argv):
    del argv
    _, model, image, v0, threads = setup_from_flags()
    rows = []
    for variant in FLAGS.variants:
        seconds = seconds_per_iteration(model, image, v0, variant, FLAGS.warmup_steps, FLAGS.steps, FLAGS.repeats)
        logging.info("torch %s loop: %.4f s per iteration.", variant, seconds)
        rows.append([variant, common.format_number(seconds)])
    print(f"Torch PIRE loop, {image.shape[0]}x{image.shape[1]} px, threads: {threads}, "
          f"{FLAGS.steps} timed iterations after {FLAGS.warmup_steps} warm-up ones:\n")
    print(common.markdown_table(["variant", "s / iteration"], rows))


if __name__ == "__main__":
    app.run(main)
