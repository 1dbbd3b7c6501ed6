"""Image reading and writing: EXIF orientation, modes, corrupt and truncated files, atomic saves."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from pire_jax import images


def _gradient(height=24, width=32):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def test_load_png_round_trip(tmp_path):
    image = _gradient()
    images.save_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(images.load_image(tmp_path / "x.png"), image)


def test_load_applies_exif_orientation(tmp_path):
    image = _gradient(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    Image.fromarray(image).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = images.load_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (20, 10, 3)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "I;16"])
def test_load_converts_modes_to_rgb(tmp_path, mode):
    source = Image.fromarray(_gradient())
    if mode == "I;16":
        converted = Image.fromarray((np.asarray(source.convert("L")).astype(np.uint16) * 257))
    else:
        converted = source.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    converted.save(path)
    loaded = images.load_image(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == (24, 32, 3)


def test_load_sixteen_bit_scaled_not_clipped(tmp_path):
    grey = np.full((8, 8), 65535, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "white.png")
    assert images.load_image(tmp_path / "white.png").min() == 255


def test_load_transparent_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # Fully transparent black.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert images.load_image(tmp_path / "clear.png").min() == 255


def test_load_truncated_jpeg_names_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_gradient(64, 64)).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(images.ImageReadError, match="cut.jpg"):
        images.load_image(path)


def test_load_non_image_names_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(images.ImageReadError, match="notes.jpg.*corrupt"):
        images.load_image(path)


def test_load_missing_file():
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        images.load_image("/nonexistent/missing.jpg")


def test_save_jpeg_quality(tmp_path):
    image = _gradient()
    images.save_image(tmp_path / "x.jpg", image, save_format="jpeg", jpeg_quality=95)
    with Image.open(tmp_path / "x.jpg") as saved:
        assert saved.format == "JPEG"
    assert np.abs(images.load_image(tmp_path / "x.jpg").astype(int) - image).mean() < 6


def test_save_rejects_float_image(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        images.save_image(tmp_path / "x.png", _gradient().astype(np.float32))


def test_save_leaves_no_partial_file(tmp_path):
    images.save_image(tmp_path / "x.png", _gradient())
    assert os.listdir(tmp_path) == ["x.png"]


def test_crop_to_box_clamps_and_rejects_empty():
    image = _gradient()
    assert images.crop_to_box(image, [-5, -5, 100, 100]).shape == image.shape
    with pytest.raises(ValueError, match="empty"):
        images.crop_to_box(image, [40, 0, 50, 10])


def test_resize_long_side_downscale_only():
    image = _gradient(24, 32)
    assert images.resize_long_side(image, 64) is image
    resized = images.resize_long_side(image, 16)
    assert resized.shape == (12, 16, 3)


def test_rgb_to_grey_weights():
    pixel = np.array([[[100, 200, 50]]], dtype=np.uint8)
    assert images.rgb_to_grey(pixel)[0, 0] == pytest.approx(0.30 * 100 + 0.59 * 200 + 0.11 * 50)


def test_quantize_to_uint8_clips_and_rounds():
    values = np.array([-3.0, 0.4, 0.6, 254.5, 300.0])
    np.testing.assert_array_equal(images.quantize_to_uint8(values), [0, 0, 1, 254, 255])


def test_save_uses_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        images.save_image(tmp_path / "x.png", _gradient())
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "x.png").st_mode & 0o777 == 0o644
