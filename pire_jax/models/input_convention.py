"""Input conventions of the networks: the only place where pixel units change.

Images and perturbations outside the networks are RGB in grey levels (0..255, uint8
or float). Each network fixes its own input units: channel order, range and
per-channel normalisation. `InputConvention` converts images and perturbations
between grey levels and those network units, so the PIRE attack can optimise in
network units and report budgets in grey levels without knowing the network.

Two conventions cover the project's networks:
  * `IMAGENET_RGB`: RGB scaled to 0..1, minus the ImageNet mean, divided by the
    ImageNet std (torchvision and cirtorch).
  * `CAFFE_BGR`: BGR in 0..255 minus the Caffe ImageNet mean, no std (Keras VGG16
    `preprocess_input(mode="caffe")`, and the ONNX export of it).
"""

import dataclasses
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np

# torchvision ImageNet statistics of RGB images in 0..1, used by cirtorch.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# Caffe ImageNet mean in grey levels, BGR order (Keras `imagenet_utils.preprocess_input`, mode "caffe").
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """Pixel units of a network input.

    network input[..., k] = (grey levels[..., channel_order[k]] / pixel_divisor - mean[k]) / std[k]

    Attributes:
      name: identifier stored in checkpoints, e.g. "imagenet_rgb".
      channel_order: for each network input channel, the RGB channel it takes
        ((0, 1, 2) for RGB, (2, 1, 0) for BGR).
      pixel_divisor: grey levels are divided by this before the mean is
        subtracted: 255.0 for inputs in 0..1, 1.0 for inputs in 0..255.
      mean: per network channel, in units after the division.
      std: per network channel, in units after the division (1.0 for no std).
    """

    name: str
    channel_order: tuple[int, int, int]
    pixel_divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):
        if sorted(self.channel_order) != [0, 1, 2]:
            raise ValueError(f"Invalid channel_order {self.channel_order}; expected a permutation of (0, 1, 2).")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Invalid input convention {self.name!r}: mean and std need 3 values each.")
        if self.pixel_divisor <= 0 or min(self.std) <= 0:
            raise ValueError(f"Invalid input convention {self.name!r}: pixel_divisor and std must be positive.")

    def _inverse_channel_order(self) -> tuple[int, int, int]:
        inverse = [0, 0, 0]
        for network_channel, rgb_channel in enumerate(self.channel_order):
            inverse[rgb_channel] = network_channel
        return tuple(inverse)

    def _network_units_per_grey_level(self) -> jnp.ndarray:
        """Per network channel: network units that one grey level of that channel is worth."""
        return 1.0 / (self.pixel_divisor * jnp.asarray(self.std, jnp.float32))

    def to_network_input(self, image: jnp.ndarray) -> jnp.ndarray:
        """Convert an RGB image in grey levels to network input.

        Args:
          image: uint8 or float array (..., H, W, 3), RGB, 0..255.

        Returns:
          float32 array (..., H, W, 3) in this network's input units and channel order.
        """
        chex.assert_axis_dimension(image, -1, 3)
        grey_levels = jnp.asarray(image).astype(jnp.float32)

        reordered = grey_levels[..., list(self.channel_order)]
        scaled = reordered / jnp.float32(self.pixel_divisor)
        return (scaled - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

    def to_grey_levels(self, network_input: jnp.ndarray) -> jnp.ndarray:
        """Convert network input back to an RGB image in grey levels (float32, not clipped or rounded)."""
        chex.assert_axis_dimension(network_input, -1, 3)
        network_input = jnp.asarray(network_input, jnp.float32)

        scaled = network_input * jnp.asarray(self.std, jnp.float32) + jnp.asarray(self.mean, jnp.float32)
        reordered = scaled * jnp.float32(self.pixel_divisor)
        return reordered[..., list(self._inverse_channel_order())]

    def perturbation_to_network(self, perturbation_grey_levels: jnp.ndarray) -> jnp.ndarray:
        """Convert an additive RGB perturbation in grey levels to network units.

        A perturbation has no mean, so only the channel order and the scale change:
        to_network_input(image + delta) = to_network_input(image) + perturbation_to_network(delta).

        Args:
          perturbation_grey_levels: float array (..., H, W, 3), RGB, in grey levels.

        Returns:
          float32 array (..., H, W, 3) in network units and network channel order.
        """
        chex.assert_axis_dimension(perturbation_grey_levels, -1, 3)
        perturbation = jnp.asarray(perturbation_grey_levels, jnp.float32)
        return perturbation[..., list(self.channel_order)] * self._network_units_per_grey_level()

    def perturbation_to_grey_levels(self, perturbation_network: jnp.ndarray) -> jnp.ndarray:
        """Convert an additive perturbation in network units back to RGB grey levels (the inverse of `perturbation_to_network`)."""
        chex.assert_axis_dimension(perturbation_network, -1, 3)
        perturbation = jnp.asarray(perturbation_network, jnp.float32) / self._network_units_per_grey_level()
        return perturbation[..., list(self._inverse_channel_order())]

    def grey_levels_per_network_unit(self) -> np.ndarray:
        """Return, per RGB channel, how many grey levels one network input unit is worth.

        For `IMAGENET_RGB` this is 255 * std (about 58.4, 57.1, 57.4), so the budget of
        10/255 network units in Liu et al.'s released PIRE code is about 2.3 grey levels.
        For `CAFFE_BGR` it is 1.

        Returns:
          float64 array (3,), RGB order.
        """
        per_network_channel = self.pixel_divisor * np.asarray(self.std, np.float64)
        return per_network_channel[list(self._inverse_channel_order())]

    def to_json(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values, for checkpoint metadata."""
        return {
            "name": self.name,
            "channel_order": list(self.channel_order),
            "pixel_divisor": self.pixel_divisor,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> "InputConvention":
        """Rebuild a convention from `to_json` output."""
        expected = {"name", "channel_order", "pixel_divisor", "mean", "std"}
        if set(fields) != expected:
            raise ValueError(f"Invalid input convention fields {sorted(fields)}; expected {sorted(expected)}.")
        return cls(
            name=str(fields["name"]),
            channel_order=tuple(int(value) for value in fields["channel_order"]),
            pixel_divisor=float(fields["pixel_divisor"]),
            mean=tuple(float(value) for value in fields["mean"]),
            std=tuple(float(value) for value in fields["std"]),
        )


IMAGENET_RGB = InputConvention(
    name="imagenet_rgb",
    channel_order=(0, 1, 2),
    pixel_divisor=255.0,
    mean=IMAGENET_MEAN_RGB,
    std=IMAGENET_STD_RGB,
)

CAFFE_BGR = InputConvention(
    name="caffe_bgr",
    channel_order=(2, 1, 0),
    pixel_divisor=1.0,
    mean=CAFFE_MEAN_BGR,
    std=(1.0, 1.0, 1.0),
)

INPUT_CONVENTIONS = {convention.name: convention for convention in (IMAGENET_RGB, CAFFE_BGR)}
