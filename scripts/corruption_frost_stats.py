"""Measures the colour statistics that the procedural frost layer
(src/corrupt/kinds.rs, FROST_STATS) borrows from the reference's frost photos:
for each of frost1.png … frost5.jpg inside the installed `imagecorruptions`
package, 200 random 224×224 crops of the photo enlarged 1.1× (as the
reference enlarges it for a 224 px image), and per channel (RGB):
the mean of the crop means, the standard deviation of the crop means
(between-crop spread), and the mean within-crop standard deviation.
Prints the Rust table (it reproduces FROST_STATS to ±0.1, the crops being random). The photos are read from the package, never copied
into the repository.

Run: .venv-corrupt/bin/python scripts/corruption_frost_stats.py
"""
from pathlib import Path

import cv2
import imagecorruptions
import numpy as np

rng = np.random.default_rng(0)
frost_dir = Path(imagecorruptions.__file__).parent / "frost"
rows = []
for name in ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]:
    img = cv2.imread(str(frost_dir / name))[..., ::-1]  # BGR -> RGB, as the reference's [..., [2, 1, 0]]
    img = cv2.resize(img, (0, 0), fx=1.1, fy=1.1, interpolation=cv2.INTER_CUBIC).astype(np.float64)
    means, stds = [], []
    for _ in range(200):
        y = rng.integers(0, img.shape[0] - 224)
        x = rng.integers(0, img.shape[1] - 224)
        c = img[y:y + 224, x:x + 224].reshape(-1, 3)
        means.append(c.mean(axis=0))
        stds.append(c.std(axis=0))
    means, stds = np.array(means), np.array(stds)
    rows.append((means.mean(axis=0), means.std(axis=0), stds.mean(axis=0)))
f = lambda v: "[" + ", ".join(f"{x:.1f}" for x in v) + "]"
for m, s, w in rows:
    print(f"    ({f(m)}, {f(s)}, {f(w)}),")
