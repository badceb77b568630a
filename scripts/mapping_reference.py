"""Independent numpy computation of the dataset mappings of docs/protocol.md, on
random probability matrices, for tests/it/mapping_parity.rs:

- model-vs-human 16 categories: category score = mean of its member classes'
  probabilities (sixteen_class_mapping.json), decision = the first of
  np.flip(np.argsort(scores)) as model-vs-human takes it (the last of tied
  top scores, where argmax would take the first);
- ImageNet-R: keep the columns of the 200 ImageNet-R wnids (a boolean mask
  over the 1000 classes in index order, as the ImageNet-R code does), argmax
  gives the position among them;
- ImageNet-9: the 1000-way argmax looked up in in_to_in9.json (-1 stays -1);
- shape bias: with random shape/texture categories (some equal, which must be
  dropped) and the 16-way decisions, the shape and texture hit counts.

Writes tests/data/mapping/probs.f32 (N×1000 little-endian float32 softmax
rows) and tests/data/mapping/expected.json.

Run: .venv/bin/python scripts/mapping_reference.py
"""
import json
import os

import numpy as np

root = os.path.join(os.path.dirname(__file__), "..")
ref = os.path.join(root, "data", "reference")
out = os.path.join(root, "tests", "data", "mapping")
os.makedirs(out, exist_ok=True)

wnids = [l.strip() for l in open(os.path.join(ref, "imagenet1k_wnids.txt")) if l.strip()]
sixteen = json.load(open(os.path.join(ref, "sixteen_class_mapping.json")))
r_wnids = {l.strip() for l in open(os.path.join(ref, "imagenet_r_wnids.txt")) if l.strip()}
in_to_in9 = json.load(open(os.path.join(ref, "in_to_in9.json")))

rng = np.random.default_rng(20261128)
n = 48
logits = rng.normal(size=(n, 1000)) * 4.0
# Sharpen a few rows onto category members so every mapping sees confident
# decisions too, not only near-uniform noise.
for i in range(0, n, 3):
    logits[i, rng.integers(0, 1000)] += 12.0
e = np.exp(logits - logits.max(axis=1, keepdims=True))
probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
probs.astype("<f4").tofile(os.path.join(out, "probs.f32"))

p = probs.astype(np.float64)
cats = sixteen["categories"]
scores16 = np.stack([p[:, sixteen["imagenet_indices"][c]].mean(axis=1) for c in cats], axis=1)
pred16 = np.flip(np.argsort(scores16, axis=1), axis=1)[:, 0]

mask = np.array([w in r_wnids for w in wnids])
pred_r = p[:, mask].argmax(axis=1)

top = p.argmax(axis=1)
pred9 = np.array([in_to_in9[str(t)] for t in top])

shape = rng.integers(0, 16, size=n)
texture = np.where(rng.random(n) < 0.2, shape, rng.integers(0, 16, size=n))
# Make some decisions hit a cue: replace a third of the shapes/textures by the decision.
for i in range(n):
    if i % 3 == 1:
        shape[i] = pred16[i]
    elif i % 3 == 2:
        texture[i] = pred16[i]
keep = shape != texture
shape_hits = int(((pred16 == shape) & keep).sum())
texture_hits = int(((pred16 == texture) & keep).sum())

json.dump(
    {
        "n": n,
        "sixteen_scores": scores16.tolist(),
        "sixteen_prediction": pred16.tolist(),
        "imagenet_r_prediction": pred_r.tolist(),
        "in9_prediction": pred9.tolist(),
        "shape": shape.tolist(),
        "texture": texture.tolist(),
        "kept": int(keep.sum()),
        "shape_hits": shape_hits,
        "texture_hits": texture_hits,
        "shape_bias": shape_hits / (shape_hits + texture_hits),
    },
    open(os.path.join(out, "expected.json"), "w"),
    indent=0,
)
print(f"{n} rows; kept {int(keep.sum())}, shape hits {shape_hits}, texture hits {texture_hits}; "
      f"{(pred9 < 0).sum()} outside ImageNet-9")
