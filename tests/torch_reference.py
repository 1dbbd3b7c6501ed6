"""Independent PyTorch reference of the GeM retrieval networks and of cirtorch's extraction, for tests.

torchvision is not installed, so this module rebuilds torchvision's ResNet and VGG16
with the same module names, which gives the same state-dict keys. It also rebuilds
cirtorch's ImageRetrievalNet (features, GeM, l2n and an optional whitening layer),
cirtorch's single- and multi-scale extraction and its `whitenapply`. It shares no
code with pire_jax: images are cropped and resized with PIL, normalised with torch,
and rescaled with `torch.nn.functional.interpolate`.

It also writes checkpoints with random weights under the real key names and shapes,
whose BatchNorm statistics are measured on images so that activations stay finite
and informative through all 101 layers.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

RESNET_STAGES = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class Bottleneck(nn.Module):
    def __init__(self, in_channels, width, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, width * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(width * 4)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with bottlenecks: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc."""

    def __init__(self, stages):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for stage, blocks in enumerate(stages):
            width = 64 * 2**stage
            layer = []
            for block in range(blocks):
                stride = 2 if block == 0 and stage > 0 else 1
                layer.append(Bottleneck(in_channels, width, stride, downsample=block == 0))
                in_channels = width * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)


class VGG16(nn.Module):
    """torchvision's vgg16: features (conv/ReLU/max-pool), avgpool, classifier."""

    def __init__(self):
        super().__init__()
        layers, in_channels = [], 3
        for entry in VGG16_CONFIG:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, entry, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = entry
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Dropout(), nn.Linear(4096, 1000),
        )  # fmt: skip


class GeM(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)

    def forward(self, x):
        pooled = F.avg_pool2d(x.clamp(min=1e-6).pow(self.p), (x.size(-2), x.size(-1)))
        return pooled.pow(1.0 / self.p)


def l2n(x):
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + 1e-6)


class ImageRetrievalNet(nn.Module):
    """cirtorch's ImageRetrievalNet for GeM: returns (N, D) descriptors."""

    def __init__(self, features, feature_dim, p, whitening_dim=None):
        super().__init__()
        self.features = features
        self.pool = GeM(p)
        self.whiten = nn.Linear(feature_dim, whitening_dim, bias=True) if whitening_dim else None

    def forward(self, x):
        descriptors = l2n(self.pool(self.features(x))).squeeze(-1).squeeze(-1)
        if self.whiten is not None:
            descriptors = l2n(self.whiten(descriptors))
        return descriptors


def cirtorch_features(classifier_net):
    """Backbone as cirtorch builds it from a torchvision classifier."""
    if isinstance(classifier_net, VGG16):
        return nn.Sequential(*list(classifier_net.features.children())[:-1])
    return nn.Sequential(*list(classifier_net.children())[:-2])


def calibration_images(count, height, width, seed):
    """Smooth random colour images with noise, as uint8 (count, H, W, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 3, 6, 6)).astype(np.float32)
    smooth = F.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bicubic", align_corners=False)
    noisy = smooth.numpy() + rng.normal(0, 20, (count, 3, height, width))
    return np.clip(noisy, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def randomize_classifier(net, seed):
    """Fill a ResNet or VGG16 with random weights that keep activations finite, and measure BN statistics.

    Convolutions get He-normal weights. BatchNorm scales are drawn around 1 (the last
    BN of each bottleneck around 0.3, so residual branches do not blow up), biases
    around 0, and running statistics are the batch statistics of calibration images.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                low, high = (0.2, 0.5) if name.endswith("bn3") else (0.7, 1.3)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * (high - low) + low)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.01)
                module.bias.zero_()

    batch_norms = [module for module in net.modules() if isinstance(module, nn.BatchNorm2d)]
    if batch_norms:
        for module in batch_norms:
            module.reset_running_stats()
            module.momentum = None  # Cumulative average: one batch sets the running statistics.
        images = calibration_images(4, 96, 96, seed + 1)
        net.train()
        with torch.no_grad():
            features = cirtorch_features(net) if isinstance(net, ResNet) else net.features
            features(normalise_imagenet(images))
        for module in batch_norms:
            module.momentum = 0.1
    net.eval()
    return net


def build_classifier(arch, seed):
    net = VGG16() if arch == "vgg16" else ResNet(RESNET_STAGES[arch])
    return randomize_classifier(net, seed)


def build_retrieval_net(arch, seed, p=3.0, whitening_dim=None):
    """A cirtorch GeM network with random weights; the whitening layer (if any) is random too."""
    classifier = build_classifier(arch, seed)
    feature_dim = 512 if arch == "vgg16" else 2048
    net = ImageRetrievalNet(cirtorch_features(classifier), feature_dim, p, whitening_dim)
    if whitening_dim:
        generator = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():
            net.whiten.weight.copy_(torch.randn(net.whiten.weight.shape, generator=generator) / math.sqrt(feature_dim))
            net.whiten.bias.copy_(torch.randn(net.whiten.bias.shape, generator=generator) * 0.01)
    return net.eval()


def random_learned_whitening(dim, seed, output_dim=None):
    """cirtorch-style Lw entry {'m': (D, 1), 'P': (D_out, D)} as float64 NumPy arrays."""
    rng = np.random.default_rng(seed)
    output_dim = output_dim or dim
    return {"m": rng.normal(0, 0.01, (dim, 1)), "P": rng.normal(0, 1.0 / math.sqrt(dim), (output_dim, dim))}


def normalise_imagenet(images_uint8):
    """uint8 (N, H, W, 3) RGB -> float tensor (N, 3, H, W), torchvision ToTensor + Normalize."""
    tensor = torch.from_numpy(np.array(images_uint8)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


def normalise_caffe(images_uint8):
    """uint8 (N, H, W, 3) RGB -> float tensor (N, 3, H, W), BGR minus the Caffe mean."""
    bgr = torch.from_numpy(np.array(images_uint8[..., ::-1])).permute(0, 3, 1, 2).float()
    return bgr - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


def cirtorch_load_image(image_uint8, box, image_size):
    """cirtorch's ImagesFromList: PIL crop to the box, then thumbnail to `image_size` with Lanczos."""
    pil_image = Image.fromarray(image_uint8)
    if box is not None:
        pil_image = pil_image.crop(box)
    if image_size is not None:
        pil_image.thumbnail((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=None)
    return np.asarray(pil_image)


def cirtorch_multiscale(net, network_input, scales):
    """cirtorch's extract_ms combination for one normalised input (1, 3, H, W); differentiable, returns (D,)."""
    exponent = 1.0
    if len(scales) > 1 and net.whiten is None:
        exponent = net.pool.p.item()
    total = 0.0
    for scale in scales:
        if scale == 1:
            scaled = network_input.clone()
        else:
            scaled = F.interpolate(network_input, scale_factor=scale, mode="bilinear", align_corners=False)
        total = total + net(scaled)[0].pow(exponent)
    total = (total / len(scales)).pow(1.0 / exponent)
    return total / total.norm()


def cirtorch_extract(net, image_uint8, box=None, image_size=None, scales=(1.0,), normalise=normalise_imagenet):
    """cirtorch's extract_ss / extract_ms for one image; returns a float64 NumPy vector."""
    prepared = cirtorch_load_image(image_uint8, box, image_size)
    network_input = normalise(prepared[None])
    with torch.no_grad():
        if len(scales) == 1 and scales[0] == 1:
            return net(network_input)[0].double().numpy()
        return cirtorch_multiscale(net, network_input, scales).double().numpy()


def whitenapply(descriptors, mean, projection):
    """cirtorch's whitenapply on rows: l2n(P (x - m)), in float64."""
    whitened = (descriptors - mean.reshape(1, -1)) @ projection.T
    return whitened / (np.linalg.norm(whitened, axis=1, keepdims=True) + 1e-6)


def cirtorch_meta(arch, net, learned_whitening=None):
    """The `meta` dict cirtorch saves with a GeM network."""
    output_dim = 512 if arch == "vgg16" else 2048
    if net.whiten is not None:
        output_dim = net.whiten.out_features
    meta = {
        "architecture": arch,
        "local_whitening": False,
        "pooling": "gem",
        "regional": False,
        "whitening": net.whiten is not None,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "outputdim": output_dim,
    }
    if learned_whitening is not None:
        meta["Lw"] = learned_whitening
    return meta


def save_cirtorch_checkpoint(path, arch, net, learned_whitening=None, legacy_format=False):
    """Write a checkpoint laid out as cirtorch's training script saves it."""
    meta = cirtorch_meta(arch, net, learned_whitening)
    checkpoint = {"epoch": 30, "meta": meta, "state_dict": net.state_dict(), "min_loss": 0.25}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy_format)
