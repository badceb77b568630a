"""Small dataset trees in the real layouts quba reads with `--benchmark
imagenet` (ImageNet val wnid folders, model-vs-human's datasets, ImageNet-R,
ImageNet-9's backgrounds challenge), made from scikit-image's bundled
photographs, and onnxruntime's top-1 decisions of EfficientNet-Lite0 fp32 and
int8 on every clean image, for tests/it/lite0_real.rs.

The tensors are the ones quba feeds (lite0_from_checkpoint.preprocess: Pillow
bicubic resize with the long side truncated, centre crop rounded half to
even, float32 normalisation), so a decision that differs is the engine's,
not the pipeline's. Every photograph is there as PNG and as JPEG (Pillow's
encoder, quality 90); reference.json says which file each decision is for
and how far its top two logits are apart.

    .venv-ci/bin/python scripts/lite0_ci_fixtures.py [--models DIR] [--out DIR/fixtures]
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageFilter, ImageOps
from skimage import data as skdata

import lite0_from_checkpoint as lite0

ROOT = Path(__file__).resolve().parent.parent
# Clean set: wnid folder ← photograph, each as PNG and JPEG plus a mirrored
# and a cropped copy (other resize ratios), in the classes the fp32 model
# gives them (tiger cat, espresso). Two classes only: the corruption
# dimension needs all 75 cells of at least one image per class, and the
# attacks one image per class, which are most of the test's time.
CLEAN = {"n02123159": "chelsea", "n07920052": "coffee"}


def photo(name: str) -> Image.Image:
    loaders = {"motorcycle_left": lambda: skdata.stereo_motorcycle()[0], "clock_motion": skdata.clock}
    return Image.fromarray(loaders.get(name, getattr(skdata, name, None))()).convert("RGB")


def save_both(img: Image.Image, dir: Path, stem: str):
    dir.mkdir(parents=True, exist_ok=True)
    img.save(dir / f"{stem}.png")
    img.save(dir / f"{stem}.jpg", quality=90)


def edge(img):
    return ImageOps.invert(img.convert("L").filter(ImageFilter.FIND_EDGES)).convert("RGB")


def silhouette(img):
    return img.convert("L").point(lambda v: 0 if v < 110 else 255).convert("RGB")


def sketch(img):
    g = img.convert("L")
    return ImageOps.autocontrast(ImageOps.invert(g.filter(ImageFilter.CONTOUR).filter(ImageFilter.SMOOTH))).convert("RGB")


def stylised(img):
    return ImageOps.posterize(ImageOps.equalize(img), 3).filter(ImageFilter.EDGE_ENHANCE_MORE)


def blend(shape, texture):
    return Image.blend(shape, texture.resize(shape.size, Image.BICUBIC), 0.35)


def build(out: Path):
    if out.exists():
        shutil.rmtree(out)
    p = {n: photo(n) for n in ("chelsea", "coffee", "rocket", "astronaut", "motorcycle_left", "clock_motion")}
    for wnid, name in CLEAN.items():
        img = p[name]
        save_both(img, out / "val" / wnid, name)
        ImageOps.mirror(img).save(out / "val" / wnid / f"{name}-mirrored.png")
        w, h = img.size
        img.crop((w // 8, 0, w - w // 5, h - h // 6)).save(out / "val" / wnid / f"{name}-cropped.png")
    mvh = out / "model-vs-human" / "datasets"
    for set_, f in (("edge", edge), ("silhouette", silhouette), ("sketch", sketch), ("stylized", stylised)):
        save_both(f(p["chelsea"]), mvh / set_ / "cat", "chelsea")
        save_both(f(p["rocket"]), mvh / set_ / "airplane", "rocket")
        save_both(f(p["motorcycle_left"]), mvh / set_ / "bicycle", "motorcycle")
    cue = mvh / "cue-conflict"
    save_both(blend(p["chelsea"], p["clock_motion"]), cue / "cat", "cat1-clock1")
    save_both(blend(p["chelsea"], p["rocket"]), cue / "cat", "cat2-airplane1")
    save_both(blend(p["rocket"], p["chelsea"]), cue / "airplane", "airplane1-cat1")
    save_both(blend(p["motorcycle_left"], p["coffee"]), cue / "bicycle", "bicycle1-bottle1")
    r = out / "imagenet-r"
    for wnid, name in (("n02123045", "chelsea"), ("n07920052", "coffee"), ("n03773504", "rocket")):
        save_both(sketch(p[name]), r / wnid, f"{name}-sketch")
        save_both(stylised(p[name]), r / wnid, f"{name}-art")
    bg = out / "bg_challenge"
    # mixed_same keeps a photograph's own surroundings; mixed_rand pastes its
    # centre onto another photograph.
    for folder, name, other in (("4_carnivore", "chelsea", "coffee"), ("2_wheeled vehicle", "motorcycle_left", "astronaut")):
        img = p[name]
        save_both(img, bg / "mixed_same" / "val" / folder, name)
        back = p[other].resize(img.size, Image.BICUBIC)
        w, h = img.size
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        back.paste(img.crop(box), box)
        save_both(back, bg / "mixed_rand" / "val" / folder, name)
    return out


def clean_samples(val: Path):
    """quba's sample order: class folders sorted, files sorted within each."""
    return [f for d in sorted(x for x in val.iterdir() if x.is_dir()) for f in sorted(d.iterdir())]


def decisions(session, xs):
    logits = session.run(None, {"input": xs})[0]
    top = np.sort(logits, 1)
    return logits.argmax(1), top[:, -1] - top[:, -2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(ROOT / "models" / "external" / "efficientnet-lite0"),
                    help="where lite0_from_checkpoint.py wrote the ONNX files")
    ap.add_argument("--out", help="default: MODELS/fixtures")
    a = ap.parse_args()
    models = Path(a.models)
    out = build(Path(a.out) if a.out else models / "fixtures")
    files = clean_samples(out / "val")
    xs = np.stack([lite0.preprocess(Image.open(f)) for f in files])
    wnids = (ROOT / "data" / "reference" / "imagenet1k_wnids.txt").read_text().split()
    reference = {"onnxruntime": ort.__version__, "clean": [{"path": f.relative_to(out / "val").as_posix(),
                                                           "label": wnids.index(f.parent.name)} for f in files]}
    tops = {}
    for prec in ("fp32", "int8"):
        so = ort.SessionOptions()
        # The QDQ graph as written (no fused int8 kernels): the arithmetic quba's integer path reproduces.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(str(models / f"efficientnet-lite0.{prec}.onnx"), so, providers=["CPUExecutionProvider"])
        top, margin = decisions(s, xs)
        tops[prec] = top
        for r, t, m in zip(reference["clean"], top, margin):
            r[prec] = int(t)
            r[f"{prec}_margin"] = round(float(m), 4)
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    agree = int((tops["fp32"] == tops["int8"]).sum())
    right = {k: int(sum(t == r["label"] for t, r in zip(v, reference["clean"]))) for k, v in tops.items()}
    print(f"wrote {out}: {len(files)} clean images, fp32 right on {right['fp32']}, int8 on {right['int8']}, "
          f"int8 agrees with fp32 on {agree}/{len(files)}; smallest top-2 margin fp32 "
          f"{min(r['fp32_margin'] for r in reference['clean'])}, int8 {min(r['int8_margin'] for r in reference['clean'])}")
    for r in reference["clean"]:
        print(f"  {r['path']}: fp32 {wnids[r['fp32']]} ({r['fp32_margin']}), int8 {wnids[r['int8']]} ({r['int8_margin']})")


if __name__ == "__main__":
    main()
