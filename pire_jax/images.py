"""Image files and pixel units: reading, writing, cropping, resizing, grey conversion.

Units used across the project, named wherever a value changes unit:
  * uint8 image: `np.uint8`, shape (H, W, 3), RGB, 0..255. Everything read from or
    written to disk is in this unit.
  * grey levels: float32, same scale as uint8 (0..255) but not rounded. Budgets and
    perturbations of the attacks are expressed in grey levels.
  * network input: whatever a network's `InputConvention` makes of an image
    (see `pire_jax.models.input_convention`). Only that module converts to it.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps

from pire_jax import atomic_io

# Luma weights used for every RGB to grey conversion in the project (SIFT, keypoint
# attacks, colour recovery), as in the colour-recovery rule of Liu et al. 2019:
# I_gray = 0.30 R + 0.59 G + 0.11 B. Using one set keeps a recovered colour image
# consistent with the grey image the keypoint attack produced.
GREY_WEIGHTS = (0.30, 0.59, 0.11)

SAVE_FORMATS = ("png", "jpeg")


class ImageReadError(ValueError):
    """An image file that exists but cannot be decoded (corrupt, truncated, not an image)."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a uint8 RGB array.

    The EXIF orientation is applied and any mode (grey, palette, CMYK, RGBA,
    16-bit) is converted to RGB, so every caller sees upright 3-channel pixels.

    Args:
      path: image file.

    Returns:
      uint8 array of shape (H, W, 3), RGB, 0..255.

    Raises:
      FileNotFoundError: `path` does not exist.
      ImageReadError: the file is corrupt, truncated or not an image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image not found: {path}. Check the data root and the dataset name.")
    try:
        with Image.open(path) as image:
            image.load()  # Decodes every byte now, so a truncated file fails here.
            image = ImageOps.exif_transpose(image)
            if image.mode == "I;16" or image.mode == "I":
                # 16/32-bit grey: scale to 8 bits before the RGB conversion clips it.
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                image = Image.fromarray(np.round(array * 255.0 / peak).astype(np.uint8))
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Composite over white rather than dropping alpha, which would expose
                # arbitrary colours stored under transparent pixels.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(
            f"Cannot decode image {path}: {error}. The file is corrupt, truncated or not an image; "
            "replace it with a valid copy or remove it from the dataset."
        ) from error
    return rgb


def save_image(path: str | os.PathLike, image: np.ndarray, save_format: str = "png", jpeg_quality: int = 95) -> None:
    """Write a uint8 RGB image atomically.

    Args:
      path: destination file; its extension is not used to pick the format.
      image: uint8 array (H, W, 3).
      save_format: "png" (lossless, the default for adversarial queries) or "jpeg".
      jpeg_quality: JPEG quality 1..95 when `save_format` is "jpeg".
    """
    check_uint8_image(image, "image to save")
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"Invalid save format {save_format!r}; expected one of {SAVE_FORMATS}.")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"Invalid JPEG quality {jpeg_quality}; expected 1..100.")
    buffer = io.BytesIO()
    if save_format == "png":
        Image.fromarray(image).save(buffer, format="PNG")
    else:
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    atomic_io.write_bytes_atomic(path, buffer.getvalue())


def check_uint8_image(image: np.ndarray, what: str = "image") -> None:
    """Raise ValueError unless `image` is a uint8 array of shape (H, W, 3)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        description = f"{type(image).__name__}"
        if isinstance(image, np.ndarray):
            description = f"{image.dtype} array of shape {image.shape}"
        raise ValueError(f"Invalid {what}: expected a uint8 RGB array of shape (H, W, 3), got {description}.")


def crop_to_box(image: np.ndarray, box) -> np.ndarray:
    """Crop an image to a bounding box [x1, y1, x2, y2] in pixels.

    Coordinates are rounded to the nearest integer, as `PIL.Image.crop` does in the
    cirtorch query loader, and clamped to the image.

    Args:
      image: array (H, W, ...) in any unit.
      box: x1, y1, x2, y2 with x2 > x1 and y2 > y1.

    Returns:
      The cropped view, shape (round(y2) - round(y1), round(x2) - round(x1), ...).
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(value))) for value in box)
    x1, x2 = max(0, x1), min(width, x2)
    y1, y2 = max(0, y1), min(height, y2)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"Invalid bounding box {list(box)} for an image of {width}x{height} pixels: it is empty.")
    return image[y1:y2, x1:x2]


def resize_long_side(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Downscale a uint8 image so that its long side is at most `max_size`.

    This is cirtorch's `imresize`: `PIL.Image.thumbnail` with Lanczos resampling,
    which keeps the aspect ratio and never upscales. `reducing_gap=None` gives the
    plain Lanczos resize of the Pillow versions cirtorch was released with.

    Args:
      image: uint8 array (H, W, 3).
      max_size: maximum long side in pixels, or None to keep the image as is.

    Returns:
      uint8 array (H', W', 3) with max(H', W') <= max_size.
    """
    check_uint8_image(image)
    if max_size is None or max(image.shape[:2]) <= max_size:
        return image
    pil_image = Image.fromarray(image)
    pil_image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS, reducing_gap=None)
    return np.asarray(pil_image)


def rgb_to_grey(image: np.ndarray) -> np.ndarray:
    """Convert RGB (uint8 or grey levels) to a float32 grey image in grey levels.

    Args:
      image: array (H, W, 3), 0..255.

    Returns:
      float32 array (H, W), 0..255, with the `GREY_WEIGHTS` luma weights.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Invalid RGB image of shape {image.shape}; expected (H, W, 3).")
    weights = np.asarray(GREY_WEIGHTS, dtype=np.float32)
    return image.astype(np.float32) @ weights


def quantize_to_uint8(image_grey_levels: np.ndarray) -> np.ndarray:
    """Clip grey levels to 0..255 and round to the nearest integer, as 8-bit saving does."""
    return np.clip(np.rint(image_grey_levels), 0, 255).astype(np.uint8)
