"""Pillow references for our resize + centre crop (tests/it/pil_resize.rs).

torchvision's PIL path calls `Image.resize((w, h), BICUBIC|BILINEAR)` then
crops at int(round((h - crop) / 2)); we write the source images and Pillow's
crops as lossless PNGs so the Rust test can demand identical bytes.

Run: .venv/bin/python scripts/make_resize_fixture.py
"""
import json
import os

import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "resize")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(11)
cases = []
for name, (w, h), size, crop, interp in [
    ("down_bicubic", (97, 71), 40, 36, "bicubic"),
    ("down_bilinear", (97, 71), 40, 36, "bilinear"),
    ("portrait_bicubic", (50, 83), 32, 32, "bicubic"),
    ("up_bicubic", (30, 20), 48, 44, "bicubic"),
]:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(xx / 7 + c) * np.cos(yy / 9 - c) for c in range(3)], -1) + rng.normal(0, 25, (h, w, 3))
    src = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    r = src.resize((nw, nh), Image.BICUBIC if interp == "bicubic" else Image.BILINEAR)
    top, left = int(round((nh - crop) / 2)), int(round((nw - crop) / 2))
    src.save(os.path.join(out, f"{name}.src.png"))
    r.crop((left, top, left + crop, top + crop)).save(os.path.join(out, f"{name}.pil.png"))
    cases.append({"name": name, "resize_shorter": size, "crop": crop, "interpolation": interp})
with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
