"""Pixel- and statistics-level parity of quba's corruptions with the Python
reference (`imagecorruptions`), at the reference's own size (224×224), on
real photographs (scikit-image's astronaut, coffee, chelsea, rocket, centre
crops) and synthetic-benchmark images rendered at 224 px. Writes
docs/corruption-parity.md.

- Deterministic corruptions (brightness, contrast, defocus_blur, zoom_blur,
  pixelate, jpeg_compression) and motion_blur with the angle ours drew
  (read from `quba data corrupt --trace`, fed to the reference by pinning
  its `np.random.uniform`): mean absolute pixel difference, grey levels.
- Random corruptions: the statistics the randomness should preserve — mean
  absolute change from the input (noise strength / blur amount) and the
  high-frequency energy (variance of the Laplacian) of the output, ours
  divided by the reference's, averaged over images.

Run (needs `cargo build --bin quba` and scripts/requirements-corrupt.txt):
    python3 -m venv .venv-corrupt && .venv-corrupt/bin/pip install -r scripts/requirements-corrupt.txt
    .venv-corrupt/bin/python scripts/corruption_parity.py --quba target/debug/quba
"""
import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
import refcompat  # noqa: F401  (imagecorruptions on the pinned scikit-image)
from imagecorruptions import corrupt as ref_corrupt
import imagecorruptions.corruptions as refmod
from scipy import ndimage
from skimage import data as skdata

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
         "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]
DETERMINISTIC = {"brightness", "contrast", "defocus_blur", "zoom_blur", "pixelate", "jpeg_compression", "motion_blur"}


def centre(img, side=224):
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(img[y:y + s, x:x + s]).resize((side, side), Image.BICUBIC))


def images(quba, tmp):
    photos = {n: centre(getattr(skdata, n)()) for n in ["astronaut", "coffee", "chelsea", "rocket"]}
    subprocess.run([quba, "data", "synth", "--splits", "val", "--per-class", "1", "--size", "224", "--out", str(tmp / "synth")],
                   check=True, capture_output=True)
    synth = sorted((tmp / "synth" / "val").rglob("*.png"))[:4]
    out = dict(photos)
    for p in synth:
        out["synth-" + p.parent.name] = np.asarray(Image.open(p).convert("RGB"))
    return out


def laplacian_energy(img):
    g = img.astype(np.float64).mean(axis=2)
    return ndimage.laplace(g).var()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quba", default=str(ROOT / "target" / "debug" / "quba"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "corruption-parity.md"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        imgs = images(a.quba, tmp)
        src = tmp / "in"
        src.mkdir()
        names = sorted(imgs)
        for n in names:
            Image.fromarray(imgs[n]).save(src / f"{n}.png")
        rows = []
        t_ours = {}
        t_ref = {}
        for c in NAMES:
            for s in range(1, 6):
                dst = tmp / f"{c}-{s}"
                trace = tmp / f"{c}-{s}.jsonl"
                t0 = time.perf_counter()
                subprocess.run([a.quba, "data", "corrupt", "--in", str(src), "--out", str(dst), "--corruption", c,
                                "--severity", str(s), "--trace", str(trace)], check=True, capture_output=True)
                t_ours[c] = t_ours.get(c, 0.0) + time.perf_counter() - t0
                traces = [json.loads(l) for l in trace.read_text().splitlines()]
                mads, change, energy = [], [], []
                for i, n in enumerate(names):
                    x = imgs[n]
                    ours = np.asarray(Image.open(dst / f"{n}.png").convert("RGB")).astype(np.float64)
                    if c == "motion_blur":
                        angle = traces[i]["trace"]["angle"]
                        saved = np.random.uniform
                        np.random.uniform = lambda *args, **kw: angle
                        try:
                            t0 = time.perf_counter()
                            ref = np.asarray(ref_corrupt(x, corruption_name=c, severity=s)).astype(np.float64)
                        finally:
                            np.random.uniform = saved
                    else:
                        np.random.seed(1000 * s + i)
                        t0 = time.perf_counter()
                        ref = np.asarray(ref_corrupt(x, corruption_name=c, severity=s)).astype(np.float64)
                    t_ref[c] = t_ref.get(c, 0.0) + time.perf_counter() - t0
                    ref = np.clip(ref, 0, 255)
                    mads.append(np.abs(ours - ref).mean())
                    xf = x.astype(np.float64)
                    change.append(np.abs(ours - xf).mean() / max(np.abs(ref - xf).mean(), 1e-9))
                    energy.append(laplacian_energy(ours) / max(laplacian_energy(ref), 1e-9))
                rows.append((c, s, float(np.mean(mads)), float(np.max(mads)), float(np.mean(change)), float(np.mean(energy))))
                print(f"{c} {s}: MAD {rows[-1][2]:.2f} change ratio {rows[-1][4]:.3f} HF ratio {rows[-1][5]:.3f}", flush=True)
    n_img = len(names)
    lines = [
        "# Corruption parity with `imagecorruptions`",
        "",
        f"Written by `scripts/corruption_parity.py` (imagecorruptions {refmod.__name__ and __import__('importlib.metadata').metadata.version('imagecorruptions')}),"
        f" {n_img} images at 224×224: {', '.join(names)}.",
        "",
        "- **MAD**: mean absolute difference between our output and the reference's, grey levels (0–255), mean and worst image.",
        "  Meaningful for the deterministic corruptions (marked D; motion blur with the angle ours drew fed to the reference).",
        "  For random corruptions the two draw different noise, so MAD only bounds the noise level.",
        "- **change**: mean |output − input| ours / reference (1 = same strength of noise or blur).",
        "- **HF**: variance of the Laplacian of the output, ours / reference (1 = same sharpness / noise energy).",
        "",
        "| corruption | severity | D | MAD mean | MAD max | change ratio | HF ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c, s, m, mx, ch, hf in rows:
        lines.append(f"| {c} | {s} | {'D' if c in DETERMINISTIC else ''} | {m:.2f} | {mx:.2f} | {ch:.3f} | {hf:.3f} |")
    lines += ["", "## Time (this machine, same run)", "",
              "Ours is a `quba data corrupt` process (the binary given by `--quba`) per (corruption, severity) over all images (process start, PNG decode",
              "and encode included); the reference is the Python call alone.", "",
              "| corruption | ours s | reference s | reference / ours |", "| --- | --- | --- | --- |"]
    for c in NAMES:
        lines.append(f"| {c} | {t_ours[c]:.2f} | {t_ref[c]:.2f} | {t_ref[c] / t_ours[c]:.1f}× |")
    tot_o, tot_r = sum(t_ours.values()), sum(t_ref.values())
    lines.append(f"| **all** | {tot_o:.2f} | {tot_r:.2f} | {tot_r / tot_o:.1f}× |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
