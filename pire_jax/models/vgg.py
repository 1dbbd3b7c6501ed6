"""VGG16 convolutional layers without the last max-pool, NHWC, as cirtorch uses them for GeM networks.

cirtorch keeps torchvision's `vgg16().features` minus its final max-pool, so the
output is the ReLU of conv5_3 at 1/16 of the input resolution: 13 convolutions
3x3 with padding 1, each followed by ReLU, and 2x2/2 max-pools after blocks 1 to 4.

References:
  Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015 (configuration D).
"""

import flax.linen as nn
import jax.numpy as jnp

# Output channels of the convolutions of each block of VGG16 (configuration D).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16Features(nn.Module):
    """VGG16 convolutional layers: (N, H, W, 3) network input to (N, H/16, W/16, 512) activations.

    Convolutions are named `conv{block}_{index}` with 1-based block and index, as in
    the VGG paper (conv1_1 ... conv5_3).
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for block, widths in enumerate(VGG16_BLOCKS, start=1):
            for index, width in enumerate(widths, start=1):
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{block}_{index}")(x)
                x = nn.relu(x)
            if block < len(VGG16_BLOCKS):
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return x
