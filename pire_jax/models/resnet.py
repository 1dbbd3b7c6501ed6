"""ResNet feature extractors (convolutional part, no pooling or classifier), NHWC, inference mode.

The layout is torchvision's `resnet50/101/152` as cirtorch uses it for GeM networks.
The stem is conv1 7x7/2 with padding 3 and no bias, bn1, ReLU, and a 3x3/2 max-pool
with padding 1. Four stages of bottleneck blocks (expansion 4) follow. The first
block of a stage downsamples with a strided 3x3 convolution ("ResNet v1.5") and puts
a strided 1x1 projection with BN on the shortcut. Padding is explicit, with
PyTorch's semantics, so converted weights give the same numbers as torch at every
input size.

References:
  He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d default, used by torchvision's ResNets.
BOTTLENECK_EXPANSION = 4

BatchNorm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=BATCH_NORM_EPS)


def _conv(features: int, kernel_size: int, stride: int, padding: int, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        name=name,
    )


class Bottleneck(nn.Module):
    """Bottleneck block: 1x1, 3x3 (strided), 1x1 convolutions with BN, plus the shortcut."""

    width: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        out = _conv(self.width, 1, 1, 0, "conv1")(x)
        out = nn.relu(BatchNorm(name="bn1")(out))
        out = _conv(self.width, 3, self.stride, 1, "conv2")(out)
        out = nn.relu(BatchNorm(name="bn2")(out))
        out = _conv(self.width * BOTTLENECK_EXPANSION, 1, 1, 0, "conv3")(out)
        out = BatchNorm(name="bn3")(out)

        shortcut = x
        if self.downsample:
            shortcut = _conv(self.width * BOTTLENECK_EXPANSION, 1, self.stride, 0, "downsample_conv")(x)
            shortcut = BatchNorm(name="downsample_bn")(shortcut)
        return nn.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet convolutional layers: (N, H, W, 3) network input to (N, H/32, W/32, 2048) activations.

    Submodules are named after torchvision's: `conv1`, `bn1`, and `layer{stage}_{block}`
    for `layer{stage}.{block}`.
    """

    stage_sizes: Sequence[int]
    stem_width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = _conv(self.stem_width, 7, 2, 3, "conv1")(x)
        x = nn.relu(BatchNorm(name="bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        for stage, num_blocks in enumerate(self.stage_sizes):
            width = self.stem_width * 2**stage
            for block in range(num_blocks):
                first = block == 0
                stride = 2 if first and stage > 0 else 1
                x = Bottleneck(width, stride=stride, downsample=first, name=f"layer{stage + 1}_{block}")(x)
        return x


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3))
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3))
