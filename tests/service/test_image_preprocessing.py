"""Decoding untrusted image bytes and preprocessing them for a CNN (service/images.py)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service import images
from service.api.errors import answer_for

LIMITS = images.Limits(max_bytes=5_000_000, max_pixels=40_000_000)
PRE = images.Preprocessing()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose pixels differ everywhere (so crops and resizes are visible)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels, followed by a tiny (truncated) image stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


# -- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decodes_png_jpeg_webp(fmt: str) -> None:
    image = images.decode(encode(gradient(40, 30), fmt), LIMITS)
    assert image.size == (40, 30)


def test_base64_and_data_urls() -> None:
    data = encode(gradient(8, 8), "PNG")
    assert images.from_base64(images.to_base64(data)) == data
    assert images.from_base64("data:image/png;base64," + images.to_base64(data)) == data
    for bad in ("not base64!", "abc", "I love this"):
        with pytest.raises(images.NotAnImage, match="not base64"):
            images.from_base64(bad)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", images.NotAnImage, "empty"),
        (b"hello, this is plain text and not an image at all", images.NotAnImage, "not an image"),
        (encode(gradient(8, 8), "GIF"), images.UnsupportedFormat, "GIF"),
        (encode(gradient(8, 8), "BMP"), images.UnsupportedFormat, "BMP"),
        (encode(gradient(8, 8), "TIFF"), images.UnsupportedFormat, "TIFF"),
        (png_header_only(8000, 6000), images.ImageTooLarge, "48000000 pixels"),  # over 40 MP, never decoded
        (png_header_only(30000, 30000), images.ImageTooLarge, "pixels"),  # Pillow's own bomb limit
        (png_header_only(64, 64), images.NotAnImage, "truncated"),  # header fine, pixel data missing
    ],
)
def test_rejects_with_the_right_status(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        images.decode(data, LIMITS)
    assert (
        answer_for(raised.value).status
        == {images.NotAnImage: 422, images.UnsupportedFormat: 415, images.ImageTooLarge: 413}[error]
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_not_images(fmt: str) -> None:
    data = encode(gradient(200, 150), fmt)
    with pytest.raises(images.NotAnImage):
        images.decode(data[: len(data) // 2], LIMITS)


def test_byte_limit() -> None:
    data = encode(gradient(64, 64), "PNG")
    with pytest.raises(images.ImageTooLarge, match=f"{len(data)} bytes"):
        images.decode(data, images.Limits(max_bytes=len(data) - 1, max_pixels=10**9))


# -- modes ---------------------------------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    # 40×20, left half red; orientation 6 means "rotate 90° clockwise to display".
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)
    upright = PRE.normalise(images.decode(data, LIMITS))
    assert upright.size == (20, 40)
    pixels = np.asarray(upright).astype(int)
    assert pixels[:15, :, 0].mean() > 200 and pixels[25:, :, 0].mean() < 60  # red is now on top


def in_mode(mode: str) -> Image.Image:
    if mode in ("I;16", "I"):  # 16-bit grayscale, as a 16-bit PNG decodes
        image = Image.fromarray(np.arange(2000, dtype=np.uint16).reshape(40, 50) * 32)
        return image if mode == "I;16" else image.convert("I")
    return gradient(50, 40).convert(mode)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("L", "L"),
        ("1", "L"),
        ("LA", "L"),
        ("I;16", "L"),
        ("RGB", "RGB"),
        ("RGBA", "RGB"),
        ("P", "RGB"),
        ("CMYK", "RGB"),
    ],
)
def test_every_mode_becomes_l_or_rgb_and_a_3_channel_crop(mode: str, expected: str) -> None:
    decoded = images.decode(encode(in_mode(mode), "JPEG" if mode == "CMYK" else "PNG"), LIMITS)
    normalised = PRE.normalise(decoded)
    assert normalised.mode == expected and normalised.size == (50, 40)
    crop = PRE(decoded)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    if expected == "L":
        assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all()


def test_sixteen_bit_samples_are_scaled_not_clipped() -> None:
    image = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    assert np.asarray(images.to_l_or_rgb(image)).min() == 255
    half = Image.fromarray(np.full((10, 10), 32896, dtype=np.uint16))
    assert np.asarray(images.to_l_or_rgb(half)).max() == 128
    assert np.asarray(images.to_l_or_rgb(in_mode("I"))).max() == round(1999 * 32 / 257)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_pixels_become_white(mode: str) -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)  # black, fully transparent...
    rgba[:5, :, 3] = 255  # ...except the opaque black top half
    image = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        image = image.convert("LA")
    if mode == "PA":
        image = image.convert("P")  # palette; transparency kept in info
        image.info["transparency"] = image.getpixel((0, 9))
        image = Image.open(io.BytesIO(encode(image, "PNG")))
    pixels = np.asarray(PRE.normalise(image).convert("RGB")).astype(int)
    assert pixels[:5].max() == 0 and pixels[5:].min() == 255


def test_palette_without_transparency_keeps_its_colours() -> None:
    image = Image.fromarray(np.full((6, 6, 3), (10, 200, 30), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    assert tuple(np.asarray(PRE.normalise(image))[0, 0]) == (10, 200, 30)


# -- resize, crop, normalise -----------------------------------------------------------------------


def test_resize_shorter_side_then_center_crop_like_torchvision() -> None:
    assert images.resized_size(300, 1000, 256) == (256, 853)  # longer side truncated
    assert images.resized_size(1000, 300, 256) == (853, 256)
    image = gradient(256, 300)  # already 256 wide: no resize, crop offsets 0 and round(76 / 2) = 38
    crop = PRE(image)
    assert (crop == np.asarray(image)[38 : 38 + 224, 16 : 16 + 224]).all()


@pytest.mark.parametrize("size", [(8, 8), (300, 1000), (1000, 300), (451, 300), (256, 256)])
def test_output_shape_for_any_size(size: tuple[int, int]) -> None:
    assert PRE(gradient(*size)).shape == (224, 224, 3)


def test_pixel_values_are_imagenet_normalised_nchw() -> None:
    arrays = [PRE(gradient(300, 260)), PRE(gradient(64, 64))]
    batch = PRE.pixel_values(arrays)
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    y, x = 17, 101
    expected = (arrays[1][y, x] / 255.0 - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD)
    assert np.allclose(batch[1, :, y, x], expected, atol=1e-5)


@pytest.mark.parametrize("size", [(451, 300), (2000, 1500), (64, 48), (300, 256)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_stored_form_gives_the_same_pixels_as_the_original(size: tuple[int, int], mode: str) -> None:
    """Examples are stored normalised (≤ 256 px shorter side, lossless PNG); training on them must see
    exactly what predict sees for the original upload."""
    original = gradient(*size).convert(mode)
    if mode == "RGBA":
        alpha = np.zeros(size[::-1], dtype=np.uint8)
        alpha[:, : size[0] // 2] = 255
        original.putalpha(Image.fromarray(alpha))
    data = encode(original, "PNG")
    stored = images.to_stored(images.decode(data, LIMITS), PRE)
    from_stored = images.from_stored([stored], PRE)[0]
    assert (from_stored == PRE(images.decode(data, LIMITS))).all()
    assert min(Image.open(io.BytesIO(images.from_base64(stored))).size) == min(256, min(size))


# -- thin images and the per-request pixel budget (issue 15) ---------------------------------------


def thin_png(width: int, height: int) -> bytes:
    return encode(Image.new("L", (width, height), 128), "PNG", optimize=True)


@pytest.fixture
def resize_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Output sizes of every ``Image.resize``; one over 1 M pixels fails at once instead of allocating it."""
    sizes: list[tuple[int, int]] = []
    real = Image.Image.resize

    def recording(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= 1_000_000, f"resize to {size} ({size[0] * size[1]} pixels)"
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    return sizes


def test_a_thin_image_is_cropped_before_it_is_resized(resize_sizes) -> None:
    """The attacker's 86-byte 2×2000 PNG was blown up to 256×256,000 pixels (65 M) by the resize before the
    crop; the 10×4,000,000 PNG (within the 40 M pixel limit) to 26 G pixels. Only the part that survives the
    crop is resized now: work and memory are bounded by the 224×224 output."""
    small = thin_png(2, 2000)
    assert len(small) < 100
    assert PRE(images.decode(small, LIMITS)).shape == (224, 224, 3)
    big = thin_png(10, 4_000_000)
    crop = PRE(images.decode(big, LIMITS))
    assert crop.shape == (224, 224, 3) and (crop == 128).all()
    assert max(w * h for w, h in resize_sizes) == 224 * 224
    # The stored form (training reads it back) is the image itself (shorter side ≤ 256), and it crops the same.
    assert (
        images.from_stored([images.to_stored(images.decode(small, LIMITS), PRE)], PRE)[0]
        == PRE(images.decode(small, LIMITS))
    ).all()


@pytest.mark.parametrize("size", [(8, 8), (100, 37), (255, 1000), (37, 1234), (640, 480), (3000, 2000)])
def test_cropping_before_resizing_gives_the_pixels_of_resizing_then_cropping(size: tuple[int, int]) -> None:
    image = PRE.normalise(gradient(*size))
    whole = image.resize(images.resized_size(*image.size, PRE.resize), Image.Resampling.BILINEAR)
    left, top = round((whole.width - PRE.crop) / 2), round((whole.height - PRE.crop) / 2)
    expected = np.asarray(whole.crop((left, top, left + PRE.crop, top + PRE.crop)), dtype=np.int16)
    assert np.abs(PRE(image).astype(np.int16) - expected).max() <= 1  # same sampling; rounding at most 1/255


def test_the_request_pixel_budget_is_charged_from_headers_before_decoding() -> None:
    budget = images.PixelBudget(300)
    images.decode(encode(gradient(10, 10), "PNG"), LIMITS, budget)
    images.decode(encode(gradient(10, 10), "PNG"), LIMITS, budget)
    with pytest.raises(images.ImageTooLarge, match="300 pixels per request") as refused:
        images.decode(png_header_only(10, 11), LIMITS, budget)  # 110 more: refused from its header alone
    assert refused.value.code == "too_large" and budget.spent == 200
