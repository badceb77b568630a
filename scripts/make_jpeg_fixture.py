"""Pillow's JPEG at ImageNet-C's quality, for the ImageNet-C mode's encoder
test (src/corrupt/imagenet_c.rs, `jpeg_matches_pillow`).

ImageNet-C's generator saved every corrupted crop with
`Image.fromarray(np.uint8(x)).save(path, quality=85, optimize=True)`; this
writes a small source image and Pillow's file of it, so the Rust test can
compare our encoder's quantisation tables, sampling factors and decoded pixels
with libjpeg's. Its sides are multiples of 16, as ImageNet-C's 224 crops are
(14 MCUs of 4:2:0): on a partial MCU at the bottom the two encoders pad the
chroma differently (a 45×38 image differed in the last 8 rows' chroma only).

Run: .venv-corrupt/bin/python scripts/make_jpeg_fixture.py
"""
import os

import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "jpeg")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(85)
h, w = 32, 48
yy, xx = np.mgrid[0:h, 0:w]
img = np.stack([127 + 90 * np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)], -1) + rng.normal(0, 20, (h, w, 3))
src = Image.fromarray(np.uint8(np.clip(img, 0, 255)))
src.save(os.path.join(out, "source.png"))
src.save(os.path.join(out, "pillow_q85.jpg"), quality=85, optimize=True)
print(f"wrote {out}: Pillow {Image.__version__}")
