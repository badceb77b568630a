"""JPEG files in the layouts datasets ship, and the pixels Pillow decodes
them to, for tests/it/pillow_jpeg.rs (quba's JPEG decoder against Pillow,
pixel for pixel).

torchvision's ImageFolder reads every ImageNet-family file with
`Image.open(path).convert("RGB")`; that call is the reference here. Each file
is written by Pillow from one photo-like source (smooth shading, edges and
sensor-like noise, so every DCT coefficient and the chroma upsampling
matter), in the variants the decoder must get right: baseline and
progressive; 4:2:0, 4:2:2 and 4:4:4 chroma; greyscale; CMYK (Adobe
polarity, as Pillow writes and assumes); restart markers; sides that are not
multiples of the MCU (partial blocks at the right and bottom edges); and an
ImageNet-sized 500×375 photo at quality 75. `<name>.png` holds Pillow's
RGB pixels of `<name>.jpg`; manifest.json names the Pillow and libjpeg-turbo
versions that made them.

Run: .venv-zoo/bin/python scripts/make_pillow_jpeg_fixtures.py
"""
import json
import os

import numpy as np
from PIL import Image, features

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "jpeg", "pillow")


def photo(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 80 * np.sin(xx / (7 + 3 * c) + c) * np.cos(yy / (9 - 2 * c) - c) for c in range(3)], -1)
    img[(xx - w / 3) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 4) ** 2] = [230, 40, 30]  # a saturated disc: hard chroma edges
    img[:, (xx[0] > 0.7 * w)] *= 0.35
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.uint8(np.clip(img, 0, 255)))


def main():
    os.makedirs(OUT, exist_ok=True)
    src = photo(43, 61, 7)
    big = photo(375, 500, 8)
    variants = {
        "baseline_420_q85": (src, dict(quality=85, subsampling="4:2:0")),
        "baseline_422_q90": (src, dict(quality=90, subsampling="4:2:2")),
        "baseline_444_q95": (src, dict(quality=95, subsampling="4:4:4")),
        "progressive_420_q80": (src, dict(quality=80, subsampling="4:2:0", progressive=True)),
        "progressive_444_q90": (src, dict(quality=90, subsampling="4:4:4", progressive=True)),
        "restart_420_q85": (src, dict(quality=85, subsampling="4:2:0", restart_marker_blocks=3)),
        "grey_q85": (src.convert("L"), dict(quality=85)),
        "grey_progressive_q70": (src.convert("L"), dict(quality=70, progressive=True)),
        "cmyk_q90": (src.convert("CMYK"), dict(quality=90)),
        "imagenet_500x375_q75": (big, dict(quality=75)),
    }
    manifest = {"pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"), "files": {}}
    for name, (img, opts) in variants.items():
        path = os.path.join(OUT, name + ".jpg")
        img.save(path, **opts)
        with Image.open(path) as f:
            mode = f.mode
            rgb = f.convert("RGB")
        rgb.save(os.path.join(OUT, name + ".png"))
        manifest["files"][name] = {"mode": mode, "size": list(rgb.size), "options": {k: v for k, v in opts.items()}}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(variants)} files to {OUT}: Pillow {manifest['pillow']}, libjpeg-turbo {manifest['libjpeg_turbo']}")


main()
