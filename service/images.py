"""Image inputs: decode untrusted bytes safely, normalise them for storage, preprocess them for a CNN.

The pipeline, for every image Graft sees (examples, predict inputs, dataset uploads)::

    bytes ──decode()──► PIL image ──Preprocessing.normalise()──► upright, "L"/"RGB", shorter side ≤ resize
                                        │                                   (stored as PNG: ``to_stored``)
                                        └──Preprocessing.__call__()──► uint8 (crop, crop, 3) array
    batch of arrays ──Preprocessing.pixel_values()──► float32 (n, 3, crop, crop), ImageNet-normalised

``normalise`` is idempotent and its output is what examples are stored as, so training on a stored
example gives exactly the pixels predict would give for the original upload.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from adapters.boxes import Letterbox
from adapters.kinds import Placed

# Graft enforces its own pixel limit (``Limits.max_pixels``) before decoding; Pillow's warning is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}  # Pillow format → what we call it
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,")


class ImageError(ValueError):
    """An input Graft will not take as an image; ``code`` says why (service/api/errors.py maps it to a status)."""

    code = "invalid_image"


class NotAnImage(ImageError):
    pass


class UnsupportedFormat(ImageError):
    code = "unsupported_media_type"


class ImageTooLarge(ImageError):
    code = "too_large"


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # encoded size of one image
    max_pixels: int  # width × height, checked from the header before decoding


class PixelBudget:
    """Decoded pixels one request may spend across all its images (``GRAFT_MAX_REQUEST_PIXELS``),
    charged from each header before the image is decoded; beyond it :class:`ImageTooLarge` (413)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.spent = limit, 0

    def spend(self, pixels: int) -> None:
        if self.spent + pixels > self.limit:
            raise ImageTooLarge(
                f"would bring this request's images to {self.spent + pixels} pixels in all; the limit is {self.limit} "
                "pixels per request (GRAFT_MAX_REQUEST_PIXELS): send fewer or smaller images per request"
            )
        self.spent += pixels


def from_base64(text: str) -> bytes:
    """Strict base64 (a ``data:image/...;base64,`` prefix is allowed)."""
    try:
        return base64.b64decode(_DATA_URL.sub("", text.strip(), count=1), validate=True)
    except (binascii.Error, ValueError):
        raise NotAnImage("is not base64; image tasks take base64-encoded PNG, JPEG or WebP images") from None


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(data: bytes, limits: Limits, budget: PixelBudget | None = None) -> Image.Image:
    """Decode a PNG, JPEG or WebP image fully, or raise an :class:`ImageError` saying why not.
    Its pixels are charged to ``budget`` (the request's) from the header, before decoding."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"is {len(data)} bytes; the limit is {limits.max_bytes} bytes per image")
    if not data:
        raise NotAnImage("is empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise NotAnImage("is not an image (expected PNG, JPEG or WebP)") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"has more pixels than the limit of {limits.max_pixels}") from None
    except Exception:
        raise NotAnImage("could not be read as an image (corrupt header)") from None
    if image.format not in FORMATS:
        raise UnsupportedFormat(f"is a {image.format} image; Graft takes PNG, JPEG or WebP")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(f"is {width}×{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    if budget is not None:
        budget.spend(width * height)
    try:
        image.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"has more pixels than the limit of {limits.max_pixels}") from None
    except MemoryError:
        raise
    except Exception:
        raise NotAnImage(f"could not be decoded as {FORMATS[image.format]} (truncated or corrupt file)") from None
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:
        return image


def _on_white(image: Image.Image, mode: str) -> Image.Image:
    """Composite an image with alpha onto a white background, giving ``mode`` ("L" or "RGB")."""
    rgba = image.convert("LA" if mode == "L" else "RGBA")
    background = Image.new(mode, rgba.size, 255 if mode == "L" else (255, 255, 255))
    background.paste(rgba.convert(mode), mask=rgba.getchannel("A"))
    return background


def to_l_or_rgb(image: Image.Image) -> Image.Image:
    """8-bit grayscale ("L") or RGB: alpha composited on white, palettes expanded, 16-bit scaled down."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.max() > 255:
            values = values / 257.0  # 16-bit samples
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette is not None and image.palette.mode == "RGBA"
        return _on_white(image, "RGB") if has_alpha else image.convert("RGB")
    if mode in ("LA", "La", "PA"):
        return _on_white(image, "L" if mode != "PA" else "RGB")
    if mode in ("RGBA", "RGBa"):
        return _on_white(image, "RGB")
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scale so the shorter side is ``short_side`` (the longer side truncated, as torchvision does)."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


@dataclass(frozen=True)
class Preprocessing:
    """How a CNN wants its pixels: resize the shorter side, center-crop, normalise per channel."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def normalise(self, image: Image.Image) -> Image.Image:
        """Upright, "L" or "RGB", shorter side at most ``resize`` (never upscaled). Idempotent."""
        image = to_l_or_rgb(_upright(image))
        width, height = image.size
        if min(width, height) > self.resize:
            image = image.resize(resized_size(width, height, self.resize), Image.Resampling.BILINEAR)
        return image

    def __call__(self, image: Image.Image) -> np.ndarray:
        """uint8 array (crop, crop, 3): shorter side resized to ``resize``, then center-cropped.

        Only the region that survives the crop is resized (``resize(box=...)``, the same sampling
        positions and filter scale as resizing the whole image, then cropping), so the work is bounded
        by the ``crop × crop`` output: a 2×2000 image is never blown up to 256×256,000 pixels."""
        image = self.normalise(image)
        width, height = image.size
        if min(width, height) == self.resize:  # already at scale: crop only
            left, top = round((width - self.crop) / 2), round((height - self.crop) / 2)
            image = image.crop((left, top, left + self.crop, top + self.crop))
        else:
            new_w, new_h = resized_size(width, height, self.resize)
            left, top = round((new_w - self.crop) / 2), round((new_h - self.crop) / 2)
            sx, sy = width / new_w, height / new_h  # source pixels per resized pixel
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            image = image.resize((self.crop, self.crop), Image.Resampling.BILINEAR, box=box)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def pixel_values(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Stack uint8 (h, w, 3) arrays into a float32 (n, 3, h, w) batch, normalised per channel."""
        batch = np.stack(arrays).astype(np.float32) / 255.0
        batch -= np.asarray(self.mean, dtype=np.float32)
        batch /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def letterbox(image: Image.Image, preprocessing: Preprocessing, size: int) -> tuple[np.ndarray, Letterbox]:
    """The normalised image (``preprocessing.normalise``, what the store keeps) scaled so its longer side is
    ``size`` and placed at the top-left corner of a ``size × size`` canvas padded with the mean colour
    (detection; adapters/boxes.py): uint8 (size, size, 3), and the placement that maps boxes both ways."""
    image = preprocessing.normalise(image)
    placement = Letterbox(image.width, image.height, size)
    canvas = Image.new("RGB", (size, size), tuple(round(255 * m) for m in preprocessing.mean))  # type: ignore[arg-type]
    canvas.paste(image.convert("RGB").resize(placement.inner, Image.Resampling.BILINEAR), (0, 0))
    return np.asarray(canvas, dtype=np.uint8), placement


def to_stored(image: Image.Image, preprocessing: Preprocessing) -> str:
    """The stored form of an example: the normalised image as a lossless PNG, base64-encoded."""
    out = io.BytesIO()
    preprocessing.normalise(image).save(out, format="PNG")
    return to_base64(out.getvalue())


# Stored examples were validated on the way in; this only guards against a damaged database.
STORED_LIMITS = Limits(max_bytes=1 << 30, max_pixels=1 << 30)


def from_stored(stored: Sequence[str], preprocessing: Preprocessing) -> list[np.ndarray]:
    """Stored examples → backbone inputs."""
    return [preprocessing(decode(from_base64(s), STORED_LIMITS)) for s in stored]


def placed(image: Image.Image, preprocessing: Preprocessing, size: int) -> Placed:
    """A predict input letterboxed for detection: answers map back to the caller's (upright) pixels."""
    upright = _upright(image)
    canvas, placement = letterbox(upright, preprocessing, size)
    return Placed(canvas, placement, upright.width, upright.height)


def placed_stored(stored: Sequence[str], preprocessing: Preprocessing, size: int) -> list[Placed]:
    """Stored examples letterboxed for detection (their boxes map onto the canvas through the stored size)."""
    out = []
    for one in stored:
        image = decode(from_base64(one), STORED_LIMITS)
        canvas, placement = letterbox(image, preprocessing, size)
        out.append(Placed(canvas, placement, placement.width, placement.height))
    return out
