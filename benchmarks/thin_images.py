"""Thin images (issue 15): time and peak memory of decode + preprocess, resize-then-crop (before) vs
crop-then-resize (now), each size in a fresh process so peak RSS is its own.

    .venv/bin/python benchmarks/thin_images.py     # prints a table, writes benchmarks/results/thin_images.json

The before variant is skipped where its resized image alone would exceed 2 G pixels (10×4,000,000:
26 G pixels, an out-of-memory kill); its pixel count is reported instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(640, 480), (2, 2000), (10, 40_000), (10, 4_000_000)]
SKIP_PIXELS = 2_000_000_000

CHILD = r"""
import io, json, resource, sys, time
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[4])
from service import images
w, h, variant = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
buf = io.BytesIO(); Image.new("L", (w, h), 128).save(buf, "PNG"); data = buf.getvalue()
pre = images.Preprocessing()
def before(image):
    image = pre.normalise(image)
    width, height = image.size
    if min(width, height) != pre.resize:
        image = image.resize(images.resized_size(width, height, pre.resize), Image.Resampling.BILINEAR)
        width, height = image.size
    left, top = round((width - pre.crop) / 2), round((height - pre.crop) / 2)
    return np.asarray(image.crop((left, top, left + pre.crop, top + pre.crop)).convert("RGB"), dtype=np.uint8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = (before if variant == "before" else pre)(images.decode(data, images.Limits(1 << 30, 1 << 30)))
print(json.dumps({"seconds": time.perf_counter() - t, "png_bytes": len(data), "shape": list(out.shape),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    rows = []
    for w, h in SIZES:
        row: dict = {"size": f"{w}×{h}", "pixels": w * h}
        rw, rh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        row["before_resized_pixels"] = rw * rh
        for variant in ("before", "now"):
            if variant == "before" and rw * rh > SKIP_PIXELS:
                row[variant] = None
                continue
            done = subprocess.run([sys.executable, "-c", CHILD, str(w), str(h), variant, str(ROOT)],
                                  capture_output=True, text=True, check=True)
            row[variant] = json.loads(done.stdout)
        rows.append(row)
    print(
        f"{'image':>14} {'PNG bytes':>10} {'before: resized px':>19} {'before s':>9} {'before MB':>10} {'now s':>7} "
        f"{'now MB':>7}"
    )
    for row in rows:
        b, n = row["before"], row["now"]
        b_s = f"{b['seconds']:.3f}" if b else "OOM"
        b_mb = f"{b['peak_rss_mb']:.0f}" if b else "-"
        print(f"{row['size']:>14} {n['png_bytes']:>10} {row['before_resized_pixels']:>19,} {b_s:>9} {b_mb:>10} "
              f"{n['seconds']:>7.3f} {n['peak_rss_mb']:>7.0f}")
    out = ROOT / "benchmarks" / "results" / "thin_images.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
