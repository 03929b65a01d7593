"""Triton Python backend: yolov8n.onnx (next to this file) through ONNX Runtime on the CPU.

Takes uint8 (0..255, divided by 255 in float32 here, exactly as Vigil's own preprocessing would) or
float32 (0..1) NCHW images, whichever data_type the model's config.pbtxt gives its input."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.uint8 = config["input"][0]["data_type"] == "TYPE_UINT8"
        path = Path(args["model_repository"]) / args["model_version"] / "yolov8n.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.onnx_input = self.session.get_inputs()[0].name

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if self.uint8:
                x = np.divide(x, np.float32(255.0), dtype=np.float32)
            y = self.session.run(None, {self.onnx_input: np.ascontiguousarray(x, dtype=np.float32)})[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, y)]))
        return responses
