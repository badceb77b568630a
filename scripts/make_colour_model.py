"""Writes tests/data/colour/colour-1000.onnx: a 1000-class "ImageNet" model
whose decision is known from the image alone, for the dataset-layout tests
(tests/it/datasets.rs).

Class j owns the colour R = 8·(j mod 32) + 4, G = 8·(j div 32) + 4 (B free).
The model averages each channel (GlobalAveragePool) and scores every class by
the negative squared distance of (r, g) to its colour, scaled so that the
nearest colour wins with probability ≈ 1 and the runner-up is e^-19.7 behind:
logit_j = s·(2·r·r_j + 2·g·g_j − r_j² − g_j²) (the −r² − g² term is the same
for all classes and dropped). A solid image of class j's colour is therefore
classified j; the tests build every fixture from such images.

Input pipeline (sidecar colour-1000.json): 8×8 crop of an 8×8 image, no
resize, mean 0, std 1.

Run: .venv/bin/python scripts/make_colour_model.py
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

S = 20000.0
out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "colour")
os.makedirs(out, exist_ok=True)

j = np.arange(1000)
r = (8 * (j % 32) + 4) / 255.0
g = (8 * (j // 32) + 4) / 255.0
w = np.zeros((3, 1000), dtype=np.float64)
w[0] = 2 * S * r
w[1] = 2 * S * g
b = -S * (r * r + g * g)

graph = helper.make_graph(
    [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
    ],
    "colour_1000",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
    [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quba-edge")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "colour-1000.onnx"))
with open(os.path.join(out, "colour-1000.json"), "w") as f:
    json.dump(
        {
            "name": "colour-1000",
            "num_classes": 1000,
            "pipeline": {"resize_shorter": 8, "crop": 8, "interpolation": "bicubic", "mean": [0, 0, 0], "std": [1, 1, 1]},
        },
        f,
        indent=1,
    )
    f.write("\n")
