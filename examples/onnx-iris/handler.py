"""An iris classifier served with ONNX Runtime from model.onnx (built by build_model.py)."""

import json

import numpy as np
import onnxruntime


class Handler:
    def __init__(self, config):
        options = onnxruntime.SessionOptions()
        # One replica answers one request at a time: a thread per core would only contend with other replicas.
        options.intra_op_num_threads = int(config.get("threads", 1))
        options.inter_op_num_threads = 1
        # The working directory is the project root: the model is found by its relative path.
        self.session = onnxruntime.InferenceSession(
            config.get("model", "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.features = json.loads(metadata["features"])
        self.labels = json.loads(metadata["labels"])
        self.input = self.session.get_inputs()[0].name

    def handle_async(self, payload):
        row = np.array([[float(payload[name]) for name in self.features]], dtype=np.float32)
        index, probabilities = self.session.run(None, {self.input: row})
        return {
            "prediction": self.labels[int(index[0])],
            "probabilities": {
                label: round(float(p), 4) for label, p in zip(self.labels, probabilities[0], strict=True)
            },
        }
