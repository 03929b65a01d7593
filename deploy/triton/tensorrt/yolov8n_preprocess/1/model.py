"""Triton Python backend: uint8 NCHW image (0..255) -> float32 (0..1), the first step of the
yolov8n_u8 ensemble. Divides in float32 exactly as Vigil's preprocessing does for float32 models."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "images_u8").as_numpy()
            y = np.divide(x, np.float32(255.0), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("images", y)]))
        return responses
