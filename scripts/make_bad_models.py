"""Writes the malformed-model fixtures of tests/it/spine.rs (bad_inputs_get_clear_errors).

`tests/data/bad/not-a-classifier.onnx`: a valid ONNX graph whose output is an
image ([N,3,32,32], a 1×1 convolution), not a class vector — the engine must
refuse it with a message naming the file and the expected shape.

Run: .venv/bin/python scripts/make_bad_models.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "bad")
os.makedirs(out, exist_ok=True)
w = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
graph = helper.make_graph(
    [helper.make_node("Conv", ["input", "w"], ["image"])],
    "not_a_classifier",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
    [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quba-edge")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "not-a-classifier.onnx"))
