"""The reference's glass blur, computed faster, for the ≥ 1000-image accuracy
parity run (scripts/corruption_accuracy_parity.py --fast-glass K).

`imagecorruptions.glass_blur` spends ~2.6 s per 224 px image in a Python loop
that draws two integers per pixel with `np.random.randint(-d, d, size=(2,))`
and does numpy-scalar pixel assignments. This module computes the same image:

- the draws: numpy's legacy generator fills a bounded int64 request whose range
  fits in 32 bits one 32-bit Mersenne-Twister output at a time, with no state
  kept between calls, so one `randint(-d, d, size=(n, 2))` yields exactly the
  sequence of n calls of size 2 (checked per image below, never assumed);
- the loop: `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on a numpy array assigns
  views, so it copies x[h', w'] into x[h, w] and leaves x[h', w'] as it was
  (docs/corruptions.md); here that copy runs on a list of pixel tuples.

It is not trusted on its own: `check(images, k)` runs the package's own
glass_blur on k images at every severity with the same seeds and requires
byte-identical output before the parity script uses this function.
"""
import numpy as np
import refcompat  # noqa: F401
from imagecorruptions import corruptions as ref
from skimage.filters import gaussian

# (sigma, max_delta, iterations) per severity, as in the reference.
PARAMS = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]


def glass_blur(x, severity):
    sigma, d, iterations = PARAMS[severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=sigma, channel_axis=-1) * 255)
    h_n, w_n = x.shape[:2]
    hs = range(h_n - d, d, -1)
    ws = range(w_n - d, d, -1)
    per_pass = len(hs) * len(ws)
    px = [tuple(p) for p in x.reshape(-1, x.shape[2]).tolist()]
    for _ in range(iterations):
        draws = np.random.randint(-d, d, size=(per_pass, 2)).tolist()
        k = 0
        for h in hs:
            for w in ws:
                dx, dy = draws[k]
                k += 1
                px[h * w_n + w] = px[(h + dy) * w_n + w + dx]
    x = np.array(px, dtype=np.uint8).reshape(x.shape)
    return np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255


def check(images, k, first=0):
    """Byte-identical to the package on the first k images × 5 severities, with
    the parity script's seeding (np.random.seed(index of the image), the
    index counted from `first`)."""
    for i, x in enumerate(images[:k], start=first):
        for s in range(1, 6):
            np.random.seed(i)
            want = np.uint8(np.clip(ref.glass_blur(x, s), 0, 255))
            np.random.seed(i)
            got = np.uint8(np.clip(glass_blur(x, s), 0, 255))
            if not np.array_equal(want, got):
                raise SystemExit(f"glass_fast differs from imagecorruptions on image {i}, severity {s}: "
                                 f"{int((want != got).sum())} bytes")
    return k * 5
