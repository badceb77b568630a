#!/usr/bin/env python3
"""Train the shipped model zoo on the synthetic benchmark and export it.

Eight small image classifiers (16 shape classes, 64x64 RGB input, at most
1.5 M parameters each) trained with PyTorch on the CPU on data written by
`quba data synth`, each exported as fp32 ONNX and as int8 ONNX (onnxruntime
static post-training quantisation, QDQ, per-channel weights), with a sidecar
that declares the input pipeline and a model card.

| model | architecture | recipe (what it should move vs resnet-baseline) |
| --- | --- | --- |
| cnn-baseline    | plain conv-BN-ReLU stack      | standard data (p_texture 0.8, p_background 0.8) |
| resnet-baseline | small ResNet, max-pool k3 s2  | standard data (the reference of the recipe checks) |
| mobilenet-relu6 | MobileNetV2-style, ReLU6      | standard data |
| vit-tiny        | ViT, patch 8, dim 96, depth 4 | standard data, stronger augmentation |
| resnet-texrand  | as resnet-baseline            | texture-randomised data (p_texture 1/16) -> shape bias up |
| resnet-bgrand   | as resnet-baseline            | background-randomised data (p_background 1/16) -> object focus up |
| resnet-adv      | as resnet-baseline            | FGSM-RS adversarial training, eps 8/255 in pixel space -> adversarial robustness up |
| resnet-augmix   | as resnet-baseline            | noise/blur/contrast/JPEG-like/erasing augmentation -> corruption robustness up |

Normalisation (mean 0.5, std 0.25 per channel) is applied OUTSIDE the
exported graph: the ONNX input `input` [N,3,64,64] is already normalised
(the tool applies the pipeline from the sidecar). Output `logits` [N,16],
class index = position of the class folder in sorted order.

Writes, relative to the repository root (``--out``, default models/zoo):
``<name>.fp32.onnx``, ``<name>.int8.onnx``, ``<name>.fp32.json``,
``<name>.int8.json``, ``<name>.md``, ``README.md`` and
``recipe_checks.json``. Generated data and torch checkpoints go to
``--work`` (default target/zoo, git-ignored).

Setup and the one regeneration command (from the repository root):

    python3 -m venv .venv-zoo
    .venv-zoo/bin/pip install -r scripts/requirements-zoo.txt
    cargo build --release --bin quba        # if target/release/quba is missing
    .venv-zoo/bin/python scripts/train_zoo.py

Determinism: every random choice comes from seeded torch/numpy generators,
torch runs with deterministic algorithms and a fixed thread count
(``--threads``, recorded in the cards). Whether the bytes of the .onnx files
reproduce is stated in the cards (see ``--verify``).
"""

from __future__ import annotations

import os

# Pin BLAS/OpenMP threads before torch is imported; torch's own thread count
# is set from --threads below.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent

CLASSES = [
    "arrow", "bowtie", "crescent", "cross", "diamond", "disc", "heart", "hexagon",
    "house", "lshape", "ring", "square", "star", "trapezoid", "triangle", "tshape",
]
NUM_CLASSES = len(CLASSES)
SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
PIPELINE = {
    "resize_shorter": SIZE,
    "crop": SIZE,
    "interpolation": "bicubic",
    "mean": list(MEAN),
    "std": list(STD),
}
EPS = 8.0 / 255.0
P_STD = 0.8
P_RAND = 1.0 / 16.0
OPSET = 17
EVAL_SPLITS = ["val", "edge", "silhouette", "sketch", "stylized", "rendition", "cue-conflict", "mixed_same", "mixed_rand"]
SPLIT_DIRS = {
    "train": "train",
    "val": "val",
    "edge": "ood/edge",
    "silhouette": "ood/silhouette",
    "sketch": "ood/sketch",
    "stylized": "ood/stylized",
    "rendition": "rendition",
    "cue-conflict": "cue-conflict",
    "mixed_same": "bg_challenge/mixed_same/val",
    "mixed_rand": "bg_challenge/mixed_rand/val",
}
# Corruption severities of the PyTorch-side check (pixel values in [0, 1]).
# Gaussian noise: ImageNet-C's five sigmas; gaussian blur: ImageNet-C's
# sigmas (1, 2, 3, 4, 6 at 224 px) scaled to 64 px.
NOISE_SIGMAS = (0.08, 0.12, 0.18, 0.26, 0.38)
BLUR_SIGMAS = tuple(round(s * SIZE / 224.0, 3) for s in (1, 2, 3, 4, 6))


# ---------------------------------------------------------------------------
# Architectures. Every conv is followed by BN; `fuse_bn` folds them for export.


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k=3, s=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), None: nn.Identity()}[act]

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def fuse_bn(module: nn.Module) -> nn.Module:
    """Fold every ConvBN's BatchNorm into its convolution (eval mode)."""
    for child in module.modules():
        if isinstance(child, ConvBN) and isinstance(child.bn, nn.BatchNorm2d):
            child.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(child.conv, child.bn)
            child.bn = nn.Identity()
    return module


class PlainCNN(nn.Module):
    """conv-BN-ReLU stack (VGG-like), global average pool, linear."""

    def __init__(self, widths=(24, 48, 96, 96, 192), strides=(2, 2, 2, 1, 2)):
        super().__init__()
        layers, cin = [], 3
        for w, s in zip(widths, strides):
            layers.append(ConvBN(cin, w, 3, s))
            cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = ConvBN(cin, cout, 3, stride)
        self.c2 = ConvBN(cout, cout, 3, 1, act=None)
        self.short = ConvBN(cin, cout, 1, stride, act=None) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.c2(self.c1(x)) + self.short(x))


class ResNet(nn.Module):
    """Stem conv 3x3 s2, max-pool k3 s2 p1 (overlapping), basic blocks, GAP, linear."""

    def __init__(self, widths=(24, 48, 96, 192), blocks=(1, 1, 1, 1)):
        super().__init__()
        self.stem = ConvBN(3, widths[0], 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.layers(self.pool(self.stem(x))).mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers.append(ConvBN(cin, hidden, 1, 1, act="relu6"))
        layers += [ConvBN(hidden, hidden, 3, stride, groups=hidden, act="relu6"), ConvBN(hidden, cout, 1, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2-style: depthwise-separable inverted residuals, linear bottlenecks, ReLU6."""

    # (expansion, out channels, repeats, first stride)
    CFG = ((1, 16, 1, 2), (4, 24, 2, 2), (4, 48, 3, 2), (4, 96, 2, 1))

    def __init__(self, head=384):
        super().__init__()
        layers, cin = [ConvBN(3, 16, 3, 2, act="relu6")], 16
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBN(cin, head, 1, 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(head, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    """Tiny ViT: patch-8 conv embedding, learned positions, pre-LN blocks, mean-pooled tokens."""

    def __init__(self, patch=8, dim=96, depth=4, heads=3, mlp=192):
        super().__init__()
        n = (SIZE // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, NUM_CLASSES)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.blocks(x))
        return self.fc(x.mean(1))


ARCHS = {
    "cnn": ("PlainCNN: conv3x3-BN-ReLU x5 (widths 24, 48, 96, 96, 192; strides 2, 2, 2, 1, 2), global average pool, linear 192->16", PlainCNN),
    "resnet": ("ResNet: stem conv3x3 s2 (24) -BN-ReLU, max-pool k3 s2 p1 (overlapping), four basic blocks (24, 48 s2, 96 s2, 192 s2; conv1x1-BN projection shortcuts), global average pool, linear 192->16", ResNet),
    "mobilenet": ("MobileNetV2-style: stem conv3x3 s2 (16) -BN-ReLU6, inverted residuals (t,c,n,s) = (1,16,1,2) (4,24,2,2) (4,48,3,2) (4,96,2,1) with depthwise 3x3 and linear bottlenecks, 1x1 conv to 384 -ReLU6, global average pool, linear 384->16", MobileNetV2),
    "vit": ("ViT-tiny: patch 8 (conv embedding, 64 tokens), dim 96, depth 4, heads 3, MLP 192 with GELU, pre-LayerNorm, learned positions, mean-pooled tokens, LayerNorm, linear 96->16", ViT),
}


# ---------------------------------------------------------------------------
# Recipes

RECIPES = {
    "cnn-baseline": dict(arch="cnn", data="std", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=1),
    "resnet-baseline": dict(arch="resnet", data="std", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=2),
    "mobilenet-relu6": dict(arch="mobilenet", data="std", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=3),
    "vit-tiny": dict(arch="vit", data="std", aug="basic", epochs=20, lr=2e-3, wd=0.05, seed=4),
    "resnet-texrand": dict(arch="resnet", data="texrand", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=2),
    "resnet-bgrand": dict(arch="resnet", data="bgrand", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=2),
    "resnet-adv": dict(arch="resnet", data="std", aug="basic", epochs=10, lr=3e-3, wd=5e-4, seed=2, adv="fgsm-rs"),
    "resnet-augmix": dict(arch="resnet", data="std", aug="corrupt", epochs=10, lr=3e-3, wd=5e-4, seed=2),
}
ORDER = list(RECIPES)

DATASETS = {
    # name: (splits, p_texture, p_background, per-class key)
    "std": (["train"], P_STD, P_STD, "train"),
    "texrand": (["train"], P_RAND, P_STD, "train"),
    "bgrand": (["train"], P_STD, P_RAND, "train"),
    "eval": (EVAL_SPLITS, P_STD, P_STD, "eval"),
}

AUG_TEXT = {
    "basic": "random horizontal flip, random translation up to 4 px (reflect padding)",
    "strong": "random horizontal flip, random translation up to 8 px (reflect padding), random 90-degree rotation, colour jitter (brightness +-0.2, contrast 0.7-1.3), random erasing (p 0.25)",
    "corrupt": "basic (flip, 4 px translation) plus, each independently per image: gaussian noise sigma U(0,0.2) (p 0.35), gaussian blur sigma U(0.3,1.8) (p 0.35), contrast U(0.3,1.3) and brightness +-0.3 (p 0.35), JPEG-like 8x8 DCT quantisation (p 0.25), pixelation to 16-40 px (p 0.2), random erasing with noise (p 0.3)",
}


def recipe_text(r) -> str:
    p, q = DATASETS[r["data"]][1], DATASETS[r["data"]][2]
    parts = [
        f"training data: `quba data synth` train split, p_texture {p:g}, p_background {q:g}",
        f"augmentation: {AUG_TEXT[r['aug']]}",
        f"optimiser: AdamW lr {r['lr']:g} (1-epoch linear warm-up, cosine decay), weight decay {r['wd']:g}, batch 128, {r['epochs']} epochs, cross-entropy, torch seed {r['seed']}",
    ]
    if r.get("adv"):
        parts.append("adversarial training: FGSM with random start (Wong et al. 2020), eps 8/255 in pixel space (normalisation inside the differentiated function), step 10/255, clamp to [0,1]; eps ramped linearly over the first 3 epochs; all training images attacked")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Data


def generator_version() -> str:
    try:
        m = re.search(r"GENERATOR_VERSION:\s*u32\s*=\s*(\d+)", (REPO / "src" / "synth.rs").read_text())
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


def generate(quba: Path, root: Path, name: str, per_class: int, seed: int, fake: str | None):
    splits, p, q, _ = DATASETS[name]
    out = root / name
    stamp = out / ".stamp.json"
    want = {"splits": splits, "p_texture": p, "p_background": q, "per_class": per_class, "seed": seed,
            "size": SIZE, "generator_version": generator_version(), "fake": fake}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if fake:  # a throwaway stand-in generator, for testing this script only
        cmd = [sys.executable, fake, str(out), str(per_class), str(seed), repr(p), repr(q), ",".join(splits)]
    else:
        cmd = [str(quba), "data", "synth", "--out", str(out), "--splits", ",".join(splits),
               "--per-class", str(per_class), "--seed", str(seed), "--size", str(SIZE),
               "--p-texture", repr(p), "--p-background", repr(q)]
    log(f"generating {name}: {' '.join(cmd)}")
    t = time.time()
    subprocess.run(cmd, check=True)
    log(f"  {time.time() - t:.1f} s")
    stamp.write_text(json.dumps(want))
    return out


def load_image(path: Path) -> np.ndarray:
    """The declared pipeline up to normalisation: RGB, shorter side to 64
    (bicubic), centre crop 64, uint8 HWC."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if min(w, h) != SIZE:
            s = SIZE / min(w, h)
            im = im.resize((max(SIZE, round(w * s)), max(SIZE, round(h * s))), Image.BICUBIC)
            w, h = im.size
        if (w, h) != (SIZE, SIZE):
            left, top = (w - SIZE) // 2, (h - SIZE) // 2
            im = im.crop((left, top, left + SIZE, top + SIZE))
        return np.asarray(im, dtype=np.uint8)


def load_folder(root: Path):
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes != CLASSES:
        raise SystemExit(f"{root}: class folders {classes} are not the 16 expected classes")
    xs, ys, names = [], [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() == ".png":
                xs.append(load_image(f))
                ys.append(ci)
                names.append(f.name)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    return x, torch.tensor(ys, dtype=torch.long), names


def to_unit(xb: torch.Tensor) -> torch.Tensor:
    return xb.float().div_(255.0)


class Normalized(nn.Module):
    """[0,1] pixels -> the declared normalisation -> the model (for training and attacks)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


# ---------------------------------------------------------------------------
# Augmentation (batched, per-sample randomness from one seeded generator)


def rand(g, *shape):
    return torch.rand(*shape, generator=g)


def translate(x, g, pad):
    b = x.shape[0]
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    return torch.stack([xp[i, :, oy[i]:oy[i] + SIZE, ox[i]:ox[i] + SIZE] for i in range(b)])


def flip(x, g):
    m = rand(g, x.shape[0]) < 0.5
    return torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)


def gaussian_blur(x, sigma):
    """Per-sample gaussian blur; sigma: tensor [B] (0 = identity)."""
    b, c, h, w = x.shape
    r = 5
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # [B, 2r+1]
    k = k.repeat_interleave(c, 0)  # [B*C, 2r+1]
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def dct_matrix(n=8):
    m = torch.zeros(n, n)
    for k in range(n):
        for i in range(n):
            m[k, i] = math.cos(math.pi * (2 * i + 1) * k / (2 * n)) * (math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n))
    return m


DCT = dct_matrix()


def jpeg_like(x, step):
    """8x8 block DCT of each channel, quantised with a frequency-growing step, inverse."""
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = DCT @ blocks @ DCT.T
    f = torch.arange(8, dtype=x.dtype)
    q = step.view(-1, 1, 1, 1, 1, 1) * (1 + f.view(-1, 1) + f.view(1, -1))
    coef = torch.round(coef / q) * q
    out = DCT.T @ coef @ DCT
    return out.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def erase(x, g, p, noise):
    b = x.shape[0]
    out = x.clone()
    do = rand(g, b) < p
    area = rand(g, b) * 0.2 + 0.05
    aspect = torch.exp((rand(g, b) - 0.5) * 2 * math.log(3))
    hh = (torch.sqrt(area * aspect) * SIZE).long().clamp(4, SIZE - 1)
    ww = (torch.sqrt(area / aspect) * SIZE).long().clamp(4, SIZE - 1)
    y0 = (rand(g, b) * (SIZE - hh)).long()
    x0 = (rand(g, b) * (SIZE - ww)).long()
    fill = rand(g, b, 3, SIZE, SIZE) if noise else rand(g, b, 3, 1, 1).expand(b, 3, SIZE, SIZE)
    for i in range(b):
        if do[i]:
            out[i, :, y0[i]:y0[i] + hh[i], x0[i]:x0[i] + ww[i]] = fill[i, :, y0[i]:y0[i] + hh[i], x0[i]:x0[i] + ww[i]]
    return out


def augment(x, kind, g):
    b = x.shape[0]
    x = flip(x, g)
    if kind == "strong":
        x = translate(x, g, 8)
        k = torch.randint(0, 4, (b,), generator=g)
        x = torch.stack([torch.rot90(x[i], int(k[i]), (1, 2)) for i in range(b)])
        br = (rand(g, b) - 0.5) * 0.4
        ct = 0.7 + rand(g, b) * 0.6
        m = x.mean((1, 2, 3), keepdim=True)
        x = ((x - m) * ct.view(-1, 1, 1, 1) + m + br.view(-1, 1, 1, 1)).clamp(0, 1)
        return erase(x, g, 0.25, noise=False)
    x = translate(x, g, 4)
    if kind == "basic":
        return x
    assert kind == "corrupt"
    sel = lambda p: (rand(g, b) < p).view(-1, 1, 1, 1)  # noqa: E731
    # noise
    s = rand(g, b).view(-1, 1, 1, 1) * 0.2
    x = torch.where(sel(0.35), (x + s * torch.randn(x.shape, generator=g)).clamp(0, 1), x)
    # blur
    bs = 0.3 + rand(g, b) * 1.5
    x = torch.where(sel(0.35), gaussian_blur(x, bs), x)
    # contrast / brightness
    ct = (0.3 + rand(g, b)).view(-1, 1, 1, 1)
    br = ((rand(g, b) - 0.5) * 0.6).view(-1, 1, 1, 1)
    m = x.mean((1, 2, 3), keepdim=True)
    x = torch.where(sel(0.35), ((x - m) * ct + m + br).clamp(0, 1), x)
    # JPEG-like
    st = 0.02 + rand(g, b) * 0.08
    x = torch.where(sel(0.25), jpeg_like(x, st).clamp(0, 1), x)
    # pixelation
    px = int(16 + torch.randint(0, 25, (1,), generator=g))
    pix = F.interpolate(F.interpolate(x, size=(px, px), mode="area"), size=(SIZE, SIZE), mode="nearest")
    x = torch.where(sel(0.2), pix, x)
    return erase(x, g, 0.3, noise=True).clamp(0, 1)


# ---------------------------------------------------------------------------
# Training and evaluation


def log(msg):
    print(msg, flush=True)


def count_params(net):
    return sum(p.numel() for p in net.parameters())


def fgsm(model, x, y, eps, start=None):
    x = x.clone()
    delta = torch.zeros_like(x) if start is None else start
    delta.requires_grad_(True)
    loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
    (grad,) = torch.autograd.grad(loss, delta)
    return grad.sign()


def train(name, r, data, threads):
    torch.manual_seed(r["seed"])
    net = ARCHS[r["arch"]][1]()
    model = Normalized(net)
    x_all, y_all = data
    n = x_all.shape[0]
    bs = 128
    steps_per_epoch = n // bs  # drop the last partial batch (BN on tiny batches)
    total = steps_per_epoch * r["epochs"]
    decay, no_decay = [], []
    for pn, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or pn.endswith("pos") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["wd"]}, {"params": no_decay, "weight_decay": 0.0}], lr=r["lr"])
    warm = steps_per_epoch

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(1000 + r["seed"])
    t0 = time.time()
    step = 0
    for ep in range(r["epochs"]):
        model.train()
        perm = torch.randperm(n, generator=g)
        tl, tc, tn = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x = augment(to_unit(x_all[idx]), r["aug"], g)
            y = y_all[idx]
            if r.get("adv") == "fgsm-rs":
                eps = EPS * min(1.0, (step + 1) / (3 * steps_per_epoch))
                alpha = 1.25 * eps
                start = (rand(g, *x.shape) * 2 - 1) * eps
                model.eval()  # BN statistics from clean batches only
                gsign = fgsm(model, x, y, eps, start)
                model.train()
                delta = (start + alpha * gsign).clamp(-eps, eps)
                x = (x + delta).clamp(0, 1).detach()
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tl += loss.item() * len(y)
            tc += (out.argmax(1) == y).sum().item()
            tn += len(y)
        log(f"  [{name}] epoch {ep + 1}/{r['epochs']} loss {tl / tn:.3f} train-acc {tc / tn:.3f} ({time.time() - t0:.0f} s, {threads} threads)")
    model.eval()
    return model, time.time() - t0


@torch.no_grad()
def predict(model, x_u8, bs=400):
    model.eval()
    return torch.cat([model(to_unit(x_u8[i:i + bs])) for i in range(0, len(x_u8), bs)])


def accuracy(model, x_u8, y, transform=None, bs=400):
    model.eval()
    correct = 0
    for i in range(0, len(x_u8), bs):
        x = to_unit(x_u8[i:i + bs])
        if transform is not None:
            x = transform(x, i)
        with torch.no_grad():
            correct += (model(x).argmax(1) == y[i:i + bs]).sum().item()
    return correct / len(y)


def attack_accuracy(model, x_u8, y, steps, bs=200, seed=0):
    """FGSM (steps=1, no random start) or PGD (eps 8/255, alpha 2/255, random start), pixel space."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(x_u8), bs):
        x, yy = to_unit(x_u8[i:i + bs]), y[i:i + bs]
        if steps == 1:
            xa = (x + EPS * fgsm(model, x, yy, EPS)).clamp(0, 1)
        else:
            xa = (x + (rand(g, *x.shape) * 2 - 1) * EPS).clamp(0, 1)
            for _ in range(steps):
                xa = xa + (2.0 / 255.0) * fgsm(model, xa, yy, EPS)
                xa = torch.min(torch.max(xa, x - EPS), x + EPS).clamp(0, 1)
        with torch.no_grad():
            correct += (model(xa).argmax(1) == yy).sum().item()
    return correct / len(y)


def noise_fn(sigma, seed=0):
    def f(x, i):
        g = torch.Generator().manual_seed(seed * 100003 + i)
        return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return f


def blur_fn(sigma):
    return lambda x, i: gaussian_blur(x, torch.full((x.shape[0],), sigma)).clamp(0, 1)


CUE_RE = re.compile(r"_([a-z]+)\d+-([a-z]+)\d+\.png$")


def measure(model, ev, pgd_n):
    """The PyTorch-side dimension probes of one model on the eval splits."""
    m = {}
    xv, yv, _ = ev["val"]
    m["val_acc"] = accuracy(model, xv, yv)
    for s in ("edge", "silhouette", "sketch", "stylized", "rendition"):
        m[f"{s}_acc"] = accuracy(model, *ev[s][:2])
    xc, yc, names = ev["cue-conflict"]
    pred = predict(model, xc).argmax(1)
    sh = tx = 0
    for p, shape_lbl, nm in zip(pred.tolist(), yc.tolist(), names):
        mm = CUE_RE.search(nm)
        if not mm:
            raise SystemExit(f"cue-conflict file name {nm!r} does not end in <shape><n>-<texture><m>.png")
        tex_lbl = CLASSES.index(mm.group(2))
        if tex_lbl == shape_lbl:
            continue
        sh += p == shape_lbl
        tx += p == tex_lbl
    m["cue_shape_hits"], m["cue_texture_hits"], m["cue_n"] = sh, tx, len(names)
    m["shape_bias"] = sh / (sh + tx) if sh + tx else float("nan")
    m["mixed_same_acc"] = accuracy(model, *ev["mixed_same"][:2])
    m["mixed_rand_acc"] = accuracy(model, *ev["mixed_rand"][:2])
    m["bg_gap"] = m["mixed_same_acc"] - m["mixed_rand_acc"]
    m["object_focus"] = 1 - m["bg_gap"] / m["val_acc"]
    m["fgsm_acc"] = attack_accuracy(model, xv, yv, 1)
    m["pgd10_acc"] = attack_accuracy(model, xv[:pgd_n], yv[:pgd_n], 10)
    m["pgd_n"] = pgd_n
    m["noise_acc"] = float(np.mean([accuracy(model, xv, yv, noise_fn(s, k)) for k, s in enumerate(NOISE_SIGMAS)]))
    m["blur_acc"] = float(np.mean([accuracy(model, xv, yv, blur_fn(s)) for s in BLUR_SIGMAS]))
    return m


CHECKS = [
    # (model, dimension, metric, direction)
    ("resnet-texrand", "shape bias", "shape_bias", +1),
    ("resnet-bgrand", "object focus", "bg_gap", -1),
    ("resnet-adv", "adversarial robustness", "fgsm_acc", +1),
    ("resnet-adv", "adversarial robustness", "pgd10_acc", +1),
    ("resnet-augmix", "corruption robustness", "noise_acc", +1),
    ("resnet-augmix", "corruption robustness", "blur_acc", +1),
]


def recipe_checks(metrics):
    base = metrics.get("resnet-baseline")
    rows = []
    for name, dim, key, sign in CHECKS:
        if base is None or name not in metrics:
            continue
        b, v = base[key], metrics[name][key]
        rows.append({"model": name, "dimension": dim, "metric": key, "baseline": b, "value": v,
                     "expected": "higher" if sign > 0 else "lower", "passed": bool((v - b) * sign > 0)})
    return rows


# ---------------------------------------------------------------------------
# Export and quantisation


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_opset17(m):
    """The dynamo exporter writes opset 18 and its down-converter fails on
    ReduceMean (axes became an input in 18). Our graphs differ between 17
    and 18 only there: move constant `axes` inputs of Reduce* (other than
    ReduceSum, whose axes are an input since 13) back to the attribute."""
    import onnx
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    changed_ops = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                   "ReduceLogSumExp", "ReduceSumSquare"}
    for n in m.graph.node:
        if n.op_type in changed_ops and len(n.input) > 1 and n.input[1]:
            axes = consts[n.input[1]]
            del n.input[1:]
            attrs = [a for a in n.attribute if a.name != "noop_with_empty_axes"]  # new in 18
            del n.attribute[:]
            n.attribute.extend(attrs)
            n.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
        elif n.op_type in ("Split", "Pad", "Resize", "ScatterElements", "ScatterND", "Col2Im", "LpPool"):
            raise SystemExit(f"to_opset17: {n.op_type} would need converting too")
    used = {i for n in m.graph.node for i in n.input}
    keep = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    nodes = [n for n in m.graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", OPSET))
    m.ir_version = 8  # the IR version that goes with opset 17
    return m


def export_fp32(model: Normalized, path: Path):
    import copy
    import onnx

    net = fuse_bn(copy.deepcopy(model.net)).eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, (x,), str(tmp), input_names=["input"], output_names=["logits"], opset_version=18,
                      dynamo=True, dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    m = onnx.load(str(tmp))
    tmp.unlink()
    m = to_opset17(m)
    # Keep only what a reader needs: no exporter metadata (stack traces carry
    # file paths, so they would make the bytes depend on the checkout), no
    # intermediate shape annotations, the same symbolic batch on input and
    # output; one self-contained file.
    for vi in list(m.graph.input) + list(m.graph.output):
        del vi.metadata_props[:]
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.ClearField("dim_value")
        d0.dim_param = "batch"
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    for i in m.graph.initializer:
        del i.metadata_props[:]
    del m.graph.value_info[:]
    del m.metadata_props[:]
    m.doc_string = ""
    m.graph.doc_string = ""
    m.graph.name = path.name.split(".")[0]
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return net


class CalibReader:
    def __init__(self, x):
        self.batches = [x[i:i + 20].numpy() for i in range(0, len(x), 20)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"input": self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


QUANT_OPS = ["Conv", "Gemm", "MatMul", "Clip", "Relu"]


def activation_matmuls(fp32: Path) -> list:
    """MatMul nodes without a weight input (attention's q@k^T and attn@v).
    tract 0.23.9 mis-computes them once both inputs are Q->DQ pairs (vit-tiny
    int8: 10 % top-1 in tract vs 82 % in onnxruntime, per-tensor or
    per-channel alike), so they stay float."""
    import onnx

    m = onnx.load(str(fp32))
    weights = {i.name for i in m.graph.initializer}
    return [n.name for n in m.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def quantize(fp32: Path, int8: Path, calib: torch.Tensor):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    import onnx

    quantize_static(
        str(fp32), str(int8), CalibReader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
        nodes_to_exclude=activation_matmuls(fp32), calibrate_method=CalibrationMethod.MinMax,
    )
    m = onnx.load(str(int8))
    bad = sorted({(n.domain, n.op_type) for n in m.graph.node if n.domain not in ("", "ai.onnx")})
    if bad:
        raise SystemExit(f"{int8}: non-standard ops {bad}")
    onnx.checker.check_model(m, full_check=True)
    return m


def tract_accuracy(quba: Path, files: list, val_dir: Path, work: Path) -> dict:
    """Top-1 of every file as `quba eval` (tract) measures it on the same val
    folder, keyed by file name; {} (with a warning) when that fails."""
    runs = work / "tract_runs"
    if runs.exists():
        shutil.rmtree(runs)
    out = work / "tract_results.json"
    cmd = [str(quba), "eval", "--data", str(val_dir), "--runs-dir", str(runs), "--out", str(out), "--bootstrap", "0"]
    for f in files:
        cmd += ["--model", str(f)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
        res = json.loads(out.read_text())
        by_sha = {sha256(Path(f)): Path(f).name for f in files}
        return {by_sha[m["onnx_sha256"]]: m["dimensions"]["accuracy"] for m in res["models"] if m.get("onnx_sha256") in by_sha}
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as e:
        detail = getattr(e, "stderr", "") or ""
        log(f"warning: the tract cross-check (`quba eval`) failed: {e} {detail[-500:]}")
        return {}


def ort_logits(path: Path, x_norm: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(["logits"], {"input": x_norm[i:i + 200]})[0] for i in range(0, len(x_norm), 200)])


def normalise(x_u8: torch.Tensor) -> torch.Tensor:
    return (to_unit(x_u8) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def onnx_weight_count(path: Path) -> int:
    """Elements of the float initializers of an fp32 file (BatchNorm folded)."""
    import onnx

    n = 0
    for i in onnx.load(str(path)).graph.initializer:
        if i.data_type == onnx.TensorProto.FLOAT:
            n += int(np.prod(i.dims)) if len(i.dims) else 1
    return n


def op_histogram(path: Path) -> dict:
    import onnx

    h = {}
    for n in onnx.load(str(path)).graph.node:
        h[n.op_type] = h.get(n.op_type, 0) + 1
    return dict(sorted(h.items()))


# ---------------------------------------------------------------------------
# Cards


def fmt(v, pct=True):
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def write_card(out: Path, name: str, info: dict, meta: dict):
    r = info["recipe"]
    m = info["metrics"]
    lines = [
        f"# {name}",
        "",
        f"Part of the quba-edge synthetic model zoo (see README.md beside this file). Trained by `scripts/train_zoo.py`; "
        f"this card is written by it.",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {ARCHS[r['arch']][0]} |",
        f"| parameters | {info['params']:,} in PyTorch ({info['params'] / 1e6:.3f} M); {info['onnx_weights']:,} float weights in the fp32 ONNX file (BatchNorm folded into the convolutions) |",
        f"| recipe | {recipe_text(r)} |",
        f"| training set | {meta['per_class_train']} images per class ({16 * meta['per_class_train']} images), generator seed {meta['gen_seed']} |",
        f"| training time | {info['train_s']:.0f} s on {meta['threads']} CPU thread(s) ({meta['cpu']}) |",
        f"| input | `input` float32 [batch, 3, 64, 64], already normalised; output `logits` float32 [batch, 16] (class index = sorted class-folder order) |",
        f"| pipeline | RGB, resize shorter side to 64 (bicubic), centre crop 64, scale to [0, 1], normalise mean (0.5, 0.5, 0.5) std (0.25, 0.25, 0.25) (outside the model; declared in the sidecar) |",
        f"| classes | {', '.join(CLASSES)} |",
        f"| fp32 file | `{name}.fp32.onnx`, {info['fp32_bytes']:,} bytes, sha256 `{info['fp32_sha256']}` |",
        f"| int8 file | `{name}.int8.onnx`, {info['int8_bytes']:,} bytes, sha256 `{info['int8_sha256']}` |",
        f"| ONNX | opset {OPSET}, exported with torch {meta['versions']['torch']} (`dynamo=True`), BatchNorm folded into the convolutions; fp32 ops: {', '.join(f'{k} {v}' for k, v in info['fp32_ops'].items())} |",
        f"| int8 | onnxruntime {meta['versions']['onnxruntime']} `quantize_static`, QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration on {meta['calib_n']} training images (standard train split, first {meta['calib_n'] // 16} per class); `op_types_to_quantize` = {QUANT_OPS}; no Microsoft-domain ops"
        + (f"; the {len(info['excluded_matmuls'])} attention MatMuls between two activations (q@k^T, attn@v) stay float: tract 0.23.9 gets them wrong once both inputs are QDQ (10 % top-1 vs 82 % in onnxruntime)" if info.get('excluded_matmuls') else "")
        + " |",
        f"| generator | `quba data synth`, generator version {meta['gen_version']}, seed {meta['gen_seed']}, size 64 |",
        "",
        f"## Accuracy on the synthetic val split ({info['val_n']} images, seed {meta['gen_seed']}, p_texture 0.8, p_background 0.8)",
        "",
        "| runtime | top-1 |",
        "| --- | --- |",
        f"| torch fp32 | {fmt(m['val_acc'])} |",
        f"| onnxruntime fp32 | {fmt(info['ort_fp32_acc'])} (max abs logit diff vs torch {info['fp32_maxdiff']:.2e}, top-1 agreement {fmt(info['fp32_agree'])}) |",
        f"| onnxruntime int8 | {fmt(info['ort_int8_acc'])} (max abs logit diff vs fp32 {info['int8_maxdiff']:.3f}, top-1 agreement {fmt(info['int8_agree'])}) |",
        f"| tract fp32 (`quba eval --data <val>`) | {fmt(info['tract_fp32_acc']) if info.get('tract_fp32_acc') is not None else 'not checked'} |",
        f"| tract int8 (`quba eval --data <val>`) | {fmt(info['tract_int8_acc']) if info.get('tract_int8_acc') is not None else 'not checked'} |",
        "",
        "## PyTorch-side probes (fp32, same eval data)",
        "",
        "These are the script's own quick checks, not `quba eval`'s numbers; the dimensions measured by the tool",
        "itself are to be added beside them as they land.",
        "",
        "| probe | value |",
        "| --- | --- |",
        f"| shape bias (cue-conflict, {m['cue_n']} images: shape {m['cue_shape_hits']}, texture {m['cue_texture_hits']}) | {m['shape_bias']:.3f} |",
        f"| mixed_same / mixed_rand accuracy | {fmt(m['mixed_same_acc'])} / {fmt(m['mixed_rand_acc'])} |",
        f"| background gap (same - rand) / object focus 1 - gap/val | {m['bg_gap']:.3f} / {m['object_focus']:.3f} |",
        f"| FGSM eps 8/255 accuracy (pixel space) | {fmt(m['fgsm_acc'])} |",
        f"| PGD-10 eps 8/255 alpha 2/255 accuracy (first {m['pgd_n']} val images) | {fmt(m['pgd10_acc'])} |",
        f"| gaussian noise accuracy, mean over sigma {list(NOISE_SIGMAS)} | {fmt(m['noise_acc'])} |",
        f"| gaussian blur accuracy, mean over sigma {list(BLUR_SIGMAS)} | {fmt(m['blur_acc'])} |",
        f"| edge / silhouette / sketch / stylized / rendition accuracy | {' / '.join(fmt(m[s + '_acc']) for s in ('edge', 'silhouette', 'sketch', 'stylized', 'rendition'))} |",
        "",
    ]
    checks = [c for c in info.get("checks", [])]
    if checks:
        lines += ["## Recipe check (vs resnet-baseline)", "", "| dimension | metric | resnet-baseline | this model | expected | moved |", "| --- | --- | --- | --- | --- | --- |"]
        for c in checks:
            lines.append(f"| {c['dimension']} | {c['metric']} | {c['baseline']:.3f} | {c['value']:.3f} | {c['expected']} | {'yes' if c['passed'] else 'NO'} |")
        lines.append("")
    lines += [
        "## Reproducing",
        "",
        "From the repository root, with the environment of `scripts/requirements-zoo.txt` in `.venv-zoo`:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"regenerates the whole zoo (data from `{meta['quba_rel']}`, generator version {meta['gen_version']}, seed {meta['gen_seed']}). "
        + meta["repro_note"],
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))


def tr(i, prec):
    a = i.get(f"tract_{prec}_acc")
    return fmt(a) if a is not None else "-"


def write_readme(out: Path, infos: dict, rows, meta: dict):
    lines = [
        "# Model zoo",
        "",
        "Small classifiers trained on the synthetic QUBA benchmark (`quba data synth`, 16 shape classes, 64x64 RGB) with recipes that the study",
        "links to the quality dimensions; each as fp32 ONNX and int8 ONNX (QDQ, per-channel weights), a sidecar declaring the input pipeline",
        "(`<name>.<fp32|int8>.json`), and a card (`<name>.md`). All take `input` float32 [batch, 3, 64, 64], normalised with mean 0.5 and std 0.25",
        "per channel outside the model, and give `logits` [batch, 16] in sorted class-folder order.",
        "",
        f"Generator version {meta['gen_version']}, seed {meta['gen_seed']}; val accuracy on {meta['val_n']} synthetic val images.",
        "",
        "| model | parameters | recipe | val top-1 torch fp32 | ort fp32 | ort int8 | tract fp32 | tract int8 | fp32 bytes | int8 bytes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    short = {
        "cnn-baseline": "plain CNN, standard data", "resnet-baseline": "ResNet, standard data",
        "mobilenet-relu6": "MobileNetV2-style, standard data", "vit-tiny": "ViT, standard data",
        "resnet-texrand": "texture-randomised data", "resnet-bgrand": "background-randomised data",
        "resnet-adv": "FGSM-RS adversarial training", "resnet-augmix": "corruption-heavy augmentation",
    }
    for name in ORDER:
        if name not in infos:
            continue
        i = infos[name]
        lines.append(f"| [{name}]({name}.md) | {i['params']:,} | {short[name]} | {fmt(i['metrics']['val_acc'])} | {fmt(i['ort_fp32_acc'])} | {fmt(i['ort_int8_acc'])} | {tr(i, 'fp32')} | {tr(i, 'int8')} | {i['fp32_bytes']:,} | {i['int8_bytes']:,} |")
    lines += ["", "## Recipe checks (PyTorch side, vs resnet-baseline; `recipe_checks.json`)", "",
              "| model | dimension | metric | resnet-baseline | model | expected | moved |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in rows:
        lines.append(f"| {c['model']} | {c['dimension']} | {c['metric']} | {c['baseline']:.3f} | {c['value']:.3f} | {c['expected']} | {'yes' if c['passed'] else 'NO'} |")
    lines += [
        "",
        "## Notes",
        "",
        "- Data: every split comes from `quba data synth` (generator version and seed above); the training sets are 400 images per class",
        "  (standard: p_texture = p_background = 0.8; texrand: p_texture = 1/16; bgrand: p_background = 1/16), the evaluation splits 50 per class",
        "  with the defaults. Calibration for int8: the first 13 standard training images of each class (208).",
        "- int8: onnxruntime static quantisation, QDQ, per-channel int8 weights, uint8 activations, MinMax; only standard-domain ops.",
        "  In vit-tiny the eight attention MatMuls whose inputs are both activations (q@k^T, attn@v) are left in float: with them quantised,",
        "  onnxruntime still gives 82 % top-1 but tract 0.23.9 gives 10 % (the same with per-tensor weights), a tract problem with",
        "  activation-by-activation QDQ MatMul. Every other model quantises Conv/Gemm/MatMul/Clip/Relu as they come.",
        "- The probes in the cards (shape bias, background gap, FGSM/PGD, noise/blur) are this script's PyTorch-side checks on the same data,",
        "  not the tool's dimension values; the `tract` columns are `quba eval --data <val>` on the same 800 images.",
        "",
        "## Regenerating",
        "",
        "From the repository root:",
        "",
        "```",
        "python3 -m venv .venv-zoo && .venv-zoo/bin/pip install -r scripts/requirements-zoo.txt",
        "cargo build --release --bin quba   # if target/release/quba is missing",
        meta["command"],
        "```",
        "",
        f"Training took {meta['train_total_s'] / 60:.1f} min in all ({meta['threads']} thread(s), {meta['cpu']}); the whole script {meta['script_s'] / 60:.1f} min. "
        + meta["repro_note"],
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


# ---------------------------------------------------------------------------


def cargo_busy() -> bool:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                comm = (p / "comm").read_text().strip()
            except OSError:
                continue
            if comm in ("cargo", "rustc"):
                return True
    return False


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quba", type=Path, default=REPO / "target" / "release" / "quba", help="the quba binary that generates the data")
    ap.add_argument("--work", type=Path, default=REPO / "target" / "zoo", help="generated data and checkpoints (git-ignored)")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "zoo")
    ap.add_argument("--gen-seed", type=int, default=0, help="generator seed of all data (train, eval, calibration)")
    ap.add_argument("--per-class-train", type=int, default=400)
    ap.add_argument("--per-class-eval", type=int, default=50)
    ap.add_argument("--calib", type=int, default=208, help="calibration images (class-balanced prefix of the standard train split)")
    ap.add_argument("--pgd-n", type=int, default=400, help="val images for the PGD-10 probe")
    ap.add_argument("--only", default="", help="comma-separated models to (re)train; others are loaded from their checkpoints in --work")
    ap.add_argument("--no-train", action="store_true", help="train nothing: load every model from its checkpoint, re-measure, re-export and rewrite the cards")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible, and far faster than 2 while other jobs load the cores)")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every recipe's epochs (smoke tests)")
    ap.add_argument("--fake-generator", default=None, help="a stand-in generator script, to test this script without quba (never for the shipped zoo)")
    ap.add_argument("--verify", action="store_true", help="retrain into a temporary folder and compare the .onnx bytes with --out")
    args = ap.parse_args()

    t_script = time.time()
    threads = args.threads
    if threads > 1 and cargo_busy():
        log(f"warning: cargo/rustc is running; {threads} torch threads will contend with it (1 is much faster then)")
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)

    if args.verify:
        return verify(args, threads)

    if not args.fake_generator and not args.quba.exists():
        raise SystemExit(f"{args.quba} is missing: cargo build --release --bin quba")
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    only = [] if args.no_train else ([s for s in args.only.split(",") if s] or ORDER)
    for s in only:
        if s not in RECIPES:
            raise SystemExit(f"unknown model {s!r}; known: {', '.join(ORDER)}")

    roots = {}
    for d in DATASETS:
        pc = args.per_class_train if DATASETS[d][3] == "train" else args.per_class_eval
        if d != "eval" and not any(RECIPES[s]["data"] == d for s in only) and d != "std":
            continue
        roots[d] = generate(args.quba, args.work / "data", d, pc, args.gen_seed, args.fake_generator)
    t = time.time()
    ev = {s: load_folder(roots["eval"] / SPLIT_DIRS[s]) for s in EVAL_SPLITS}
    train_sets = {d: load_folder(roots[d] / "train")[:2] for d in roots if d != "eval"}
    log(f"loaded data in {time.time() - t:.1f} s")
    # Calibration: a class-balanced set of standard training images (the
    # first calib/16 of each class in file order).
    xs, ys = train_sets["std"]
    per = args.calib // NUM_CLASSES
    cidx = torch.cat([torch.nonzero(ys == c).flatten()[:per] for c in range(NUM_CLASSES)])
    calib = normalise(xs[cidx])

    versions = {}
    for mod in ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "PIL"):
        versions[mod] = __import__(mod).__version__
    try:
        quba_version = subprocess.run([str(args.quba), "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        quba_version = "n/a"
    gen_version = generator_version() if not args.fake_generator else "FAKE (test only)"
    command = ".venv-zoo/bin/python scripts/train_zoo.py"
    extra = []
    if args.gen_seed != 0:
        extra.append(f"--gen-seed {args.gen_seed}")
    if args.per_class_train != 400:
        extra.append(f"--per-class-train {args.per_class_train}")
    if args.per_class_eval != 50:
        extra.append(f"--per-class-eval {args.per_class_eval}")
    if args.epochs_scale != 1.0:
        extra.append(f"--epochs-scale {args.epochs_scale}")
    if threads != 1:
        extra.append(f"--threads {threads}")
    if args.calib != 208:
        extra.append(f"--calib {args.calib}")
    if args.pgd_n != 400:
        extra.append(f"--pgd-n {args.pgd_n}")
    command = " ".join([command] + extra)

    models, infos, metrics = {}, {}, {}
    train_total = 0.0
    for name in ORDER:
        r = dict(RECIPES[name])
        r["epochs"] = max(1, round(r["epochs"] * args.epochs_scale))
        path = ckpt / f"{name}.pt"
        if name in only:
            log(f"training {name} ({recipe_text(r)})")
            model, secs = train(name, r, train_sets[r["data"]], threads)
            torch.save({"state": model.net.state_dict(), "train_s": secs, "threads": threads, "recipe": r}, path)
        elif path.exists():
            st = torch.load(path)
            model = Normalized(ARCHS[r["arch"]][1]())
            model.net.load_state_dict(st["state"])
            secs = st["train_s"]
        else:
            continue
        model.eval()
        train_total += secs
        models[name] = model
        log(f"measuring {name}")
        t = time.time()
        metrics[name] = measure(model, ev, args.pgd_n)
        log(f"  {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics[name].items()})} ({time.time() - t:.0f} s)")
        infos[name] = {"params": count_params(model.net), "train_s": secs, "metrics": metrics[name], "recipe": r}

    # Export and quantise.
    xv, yv, _ = ev["val"]
    xv_norm = normalise(xv)
    for name, model in models.items():
        i = infos[name]
        fp32, int8 = args.out / f"{name}.fp32.onnx", args.out / f"{name}.int8.onnx"
        net = export_fp32(model, fp32)
        quantize(fp32, int8, calib)
        with torch.no_grad():
            ref = torch.cat([net(xv_norm[j:j + 400]) for j in range(0, len(xv_norm), 400)]).numpy()
            ref_unfused = predict(model, xv).numpy()
        lf = ort_logits(fp32, xv_norm.numpy(), threads)
        lq = ort_logits(int8, xv_norm.numpy(), threads)
        yn = yv.numpy()
        i.update({
            "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
            "fp32_sha256": sha256(fp32), "int8_sha256": sha256(int8),
            "fp32_ops": op_histogram(fp32), "int8_ops": op_histogram(int8), "onnx_weights": onnx_weight_count(fp32),
            "excluded_matmuls": activation_matmuls(fp32),
            "val_n": len(yn),
            "fused_vs_unfused_maxdiff": float(np.abs(ref - ref_unfused).max()),
            "ort_fp32_acc": float((lf.argmax(1) == yn).mean()),
            "ort_int8_acc": float((lq.argmax(1) == yn).mean()),
            "fp32_maxdiff": float(np.abs(lf - ref_unfused).max()),
            "fp32_agree": float((lf.argmax(1) == ref_unfused.argmax(1)).mean()),
            "int8_maxdiff": float(np.abs(lq - lf).max()),
            "int8_agree": float((lq.argmax(1) == lf.argmax(1)).mean()),
        })
        if i["fp32_bytes"] > 6 * 1024 * 1024:
            raise SystemExit(f"{fp32} is {i['fp32_bytes']} bytes (> 6 MB)")
        for prec in ("fp32", "int8"):
            (args.out / f"{name}.{prec}.json").write_text(json.dumps({"name": name, "pipeline": PIPELINE, "num_classes": NUM_CLASSES}, indent=2) + "\n")
        log(f"{name}: params {i['params']:,} val torch {i['metrics']['val_acc']:.4f} ort-fp32 {i['ort_fp32_acc']:.4f} "
            f"(max diff {i['fp32_maxdiff']:.2e}) ort-int8 {i['ort_int8_acc']:.4f} (max diff {i['int8_maxdiff']:.3f}, agree {i['int8_agree']:.3f})")

    # Cross-check with the tool itself: tract (through `quba eval`) on the same val images.
    tract = {} if args.fake_generator else tract_accuracy(
        args.quba, [args.out / f"{n}.{p}.onnx" for n in infos for p in ("fp32", "int8")], roots["eval"] / "val", args.work)
    for name, i in infos.items():
        for prec in ("fp32", "int8"):
            a = tract.get(f"{name}.{prec}.onnx")
            i[f"tract_{prec}_acc"] = a
            if a is not None and abs(a - i[f"ort_{prec}_acc"]) > 0.01:
                log(f"warning: {name} {prec}: tract top-1 {a:.4f} vs onnxruntime {i[f'ort_{prec}_acc']:.4f}")
        if tract:
            log(f"{name}: tract (quba eval) fp32 {i['tract_fp32_acc']} int8 {i['tract_int8_acc']}")

    rows = recipe_checks(metrics)
    for c in rows:
        infos[c["model"]].setdefault("checks", []).append(c)
    log("\nrecipe checks (vs resnet-baseline):")
    for c in rows:
        log(f"  {c['model']:16s} {c['dimension']:24s} {c['metric']:10s} baseline {c['baseline']:.3f} -> {c['value']:.3f} "
            f"(expected {c['expected']}): {'moved' if c['passed'] else 'DID NOT MOVE'}")

    meta = {
        "gen_seed": args.gen_seed, "gen_version": gen_version, "quba_version": quba_version,
        "quba_rel": os.path.relpath(args.quba, REPO) if not args.fake_generator else "FAKE generator",
        "per_class_train": args.per_class_train, "per_class_eval": args.per_class_eval,
        "calib_n": len(cidx), "threads": threads, "cpu": cpu_name(), "versions": versions,
        "command": command, "val_n": len(yv), "train_total_s": train_total,
        "script_s": time.time() - t_script,
        "repro_note": REPRO_NOTE,
    }
    (args.out / "recipe_checks.json").write_text(json.dumps({
        "generator": {"version": gen_version, "seed": args.gen_seed, "size": SIZE, "quba": quba_version},
        "eval": {"val_images": len(yv), "per_class_eval": args.per_class_eval, "noise_sigmas": NOISE_SIGMAS, "blur_sigmas": BLUR_SIGMAS,
                 "eps": "8/255 pixel space", "pgd": f"10 steps, alpha 2/255, random start, first {args.pgd_n} val images"},
        "checks": rows,
        "models": {n: {k: v for k, v in infos[n].items() if k != "checks"} for n in infos},
        "training": {"total_s": round(train_total, 1), "threads": threads, "cpu": cpu_name(), "versions": versions},
    }, indent=2) + "\n")
    for name in infos:
        write_card(args.out, name, infos[name], meta)
    write_readme(args.out, infos, rows, meta)
    log(f"\ntraining {train_total / 60:.1f} min, script {(time.time() - t_script) / 60:.1f} min; wrote {args.out}")


REPRO_NOTE = ("Bytes: training is seeded, runs torch's deterministic algorithms on 1 thread, and export and quantisation are "
              "deterministic. `--verify --only cnn-baseline,mobilenet-relu6,resnet-adv,resnet-augmix` (a second process that "
              "regenerates the data and retrains into a temporary folder) reproduced all 8 of their .onnx files byte for byte, and "
              "vit-tiny's fp32 file came out identical in two separate training runs, on this machine type (x86-64 Xeon, AVX-512) "
              "with the pinned package versions. Another CPU family, another thread count or other versions may change the last "
              "bits of the weights, hence the sha256, without changing the accuracies beyond noise.")


def verify(args, threads):
    """Retrain everything into a temporary folder and compare hashes with --out."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # Same arguments, minus --verify, into a fresh --out and --work.
        argv, skip = [], False
        for a in sys.argv[1:]:
            if skip:
                skip = False
                continue
            if a in ("--out", "--work"):
                skip = True
                continue
            if a == "--verify" or a.startswith("--out=") or a.startswith("--work="):
                continue
            argv.append(a)
        cmd = [sys.executable, __file__, *argv, "--out", tmp, "--work", str(Path(tmp) / "work")]
        subprocess.run(cmd, check=True)
        same = diff = 0
        for f in sorted(Path(tmp).glob("*.onnx")):
            ref = args.out / f.name
            ok = ref.exists() and sha256(ref) == sha256(f)
            log(f"{f.name}: {'identical' if ok else 'DIFFERENT'}")
            same += ok
            diff += not ok
        log(f"{same} identical, {diff} different")
        return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
