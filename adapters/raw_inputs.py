"""How a consumer of an exported graph prepares the raw inputs of a baseline or hybrid head.

This file is shipped as is in every export zip whose graph reads raw inputs (``raw_inputs.py``): it
needs only the standard library and numpy (and Pillow for images), no Graft code. It reproduces the
featurizers' own preprocessing (adapters/heads/features.py) up to what an ONNX graph can compute:

* text → ``tokens``: the TF-IDF analyzer's string steps (lower-casing, accent stripping, the token
  regex), which ONNX has no exact operator for. The graph does the rest: n-grams, counts against the
  vocabulary, sublinear tf, idf, L2 normalisation.
* image → ``pixels``: decode, grayscale, bilinear resize (Pillow's own filter, which ONNX ``Resize``
  does not reproduce), scale to [0, 1]. The graph centres and L2-normalises.

The export manifest (``graft-export.json``) says which to call: ``preprocessing.raw.function`` and its
keyword arguments.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
WHITESPACE = re.compile(r"\s\s+")
PAD = ""  # never a token: pads the rows of ``tokens`` to one width


def strip_accents(text: str) -> str:
    """NFKD, then drop the combining characters (scikit-learn's ``strip_accents="unicode"``)."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def tokenize(text: str, analyzer: str = "word") -> list[str]:
    """One text's tokens: ``word`` — lower-case, strip accents, words of 2+ characters; ``char`` —
    lower-case, runs of whitespace to one space, one token per character."""
    text = text.lower()
    if analyzer == "char":
        return list(WHITESPACE.sub(" ", text))
    return WORD.findall(strip_accents(text))


def tokens(texts: Sequence[str], analyzer: str = "word") -> np.ndarray:
    """The graph's ``tokens`` input: a (batch, width) array of str, rows padded with ``""``, width ≥ 1."""
    rows = [tokenize(t, analyzer) for t in texts]
    width = max([1, *map(len, rows)])
    out = np.full((len(rows), width), PAD, dtype=object)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def pixels(images: Sequence[Any], size: int) -> np.ndarray:
    """The graph's ``pixels`` input: each image (bytes, base64 text or a PIL image) as grayscale resized
    to ``size``×``size`` (bilinear), flattened and scaled to [0, 1]: float32 (batch, size * size)."""
    import base64
    import io

    from PIL import Image

    def gray(image: Any) -> np.ndarray:
        small = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    out = np.empty((len(images), size * size), dtype=np.float32)
    for i, item in enumerate(images):
        if isinstance(item, str):
            item = base64.b64decode(item, validate=False)
        if isinstance(item, bytes | bytearray):
            with Image.open(io.BytesIO(item)) as image:
                out[i] = gray(image)
        else:
            out[i] = gray(item)
    return out
