"""Detection examples composited from real images, for the detection tests and benchmark.

No detection data set ships in a package Graft can install, so scenes are made here from the real
handwritten digits in the shared data (``digits.*.jsonl``: UCI/sklearn 8×8 scans): each scene is a canvas
(random size, a smooth random colour gradient plus noise) with 1 to ``max_objects`` digits pasted at random
places without overlap, each upscaled ×4 to ×8 (32 to 64 pixels, bilinear) and drawn in a random dark colour;
the label of a box is the digit. Boxes are the pasted digit's ink bounds in the scene's pixels (the data's
8×8 cells often have empty columns). Scenes with no object are made too (``empty``).
Nothing is committed; scenes are made on demand, seeded.

    python -m benchmarks.detection_data --n 4 --out /tmp/scenes   # writes PNGs and their labels as JSON
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    import os

    for candidate in (os.environ.get("GRAFT_SHARED_DATA"), ROOT.parent / "shared" / "data", "/work/shared/data"):
        if candidate and (Path(candidate) / "digits.train.jsonl").is_file():
            return Path(candidate)
    raise FileNotFoundError("shared data not found: set GRAFT_SHARED_DATA to the folder holding digits.*.jsonl")


def load_digits(split: str = "train", labels: tuple[str, ...] | None = None) -> list[tuple[np.ndarray, str]]:
    """The shared digits as (8×8 uint8 ink array, label), optionally only ``labels``."""
    out = []
    with (shared_data_dir() / f"digits.{split}.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if labels is None or row["label"] in labels:
                ink = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["input"]))).convert("L"))
                out.append((ink, row["label"]))
    return out


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    objects: list[dict[str, Any]]  # [{"box": [x0, y0, x1, y1], "label"}] in the image's pixels

    def png_base64(self) -> str:
        out = io.BytesIO()
        self.image.save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("ascii")

    def jpeg_base64(self) -> str:
        out = io.BytesIO()
        self.image.save(out, format="JPEG", quality=90)
        return base64.b64encode(out.getvalue()).decode("ascii")

    def example(self) -> dict[str, Any]:
        """As a JPEG (a tenth of the PNG's bytes on these noisy backgrounds) with its objects."""
        return {"input": self.jpeg_base64(), "label": self.objects}


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    corners = rng.uniform(150, 255, size=(2, 2, 3))
    ys, xs = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)[None, :, None]
    top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
    bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
    canvas = top * (1 - ys) + bottom * ys
    return canvas + rng.normal(0, 8, size=(height, width, 3))


def scenes(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    labels: tuple[str, ...] = ("0", "1", "7"),
    size: tuple[int, int] = (160, 240),
    max_objects: int = 3,
    empty: float = 0.1,
) -> list[Scene]:
    """``n`` scenes (see the module docstring): canvas sides uniform in ``size``; a share ``empty`` of them
    without any digit."""
    rng = np.random.default_rng(seed)
    digits = load_digits(split, labels)
    out: list[Scene] = []
    for _ in range(n):
        width, height = (int(v) for v in rng.integers(size[0], size[1] + 1, size=2))
        canvas = _background(rng, width, height)
        placed: list[list[float]] = []
        objects: list[dict[str, Any]] = []
        count = 0 if rng.random() < empty else int(rng.integers(1, max_objects + 1))
        for _ in range(count):
            ink, label = digits[int(rng.integers(len(digits)))]
            side = int(rng.integers(32, 65))
            glyph = np.asarray(Image.fromarray(ink).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)
            for _ in range(20):  # a place that overlaps no earlier digit
                x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                cols, rows = np.flatnonzero(glyph.max(0) > 40), np.flatnonzero(glyph.max(1) > 40)
                box = [float(x + cols[0]), float(y + rows[0]), float(x + cols[-1] + 1), float(y + rows[-1] + 1)]
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            alpha = (glyph / 255.0)[:, :, None]
            colour = rng.uniform(0, 90, size=3)
            region = canvas[y : y + side, x : x + side]
            canvas[y : y + side, x : x + side] = region * (1 - alpha) + colour * alpha
            placed.append(box)
            objects.append({"box": box, "label": label})
        image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
        out.append(Scene(image, objects))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes(args.n, seed=args.seed)):
        scene.image.save(args.out / f"scene{i}.png")
        (args.out / f"scene{i}.json").write_text(json.dumps(scene.objects))
        print(f"scene{i}.png {scene.image.size} {[o['label'] for o in scene.objects]}")


if __name__ == "__main__":
    main()
