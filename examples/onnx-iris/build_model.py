"""Train a small neural network on the iris data set scikit-learn ships and write it to model.onnx.

    pip install -r build-requirements.txt
    python build_model.py                  # writes model.onnx next to this script
    python build_model.py -o /tmp/x.onnx   # or elsewhere

Training is seeded, so a rebuilt model gives the committed one's predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the ONNX iris classifier.")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "model.onnx")
    args = parser.parse_args()

    iris = load_iris()
    data = iris.data.astype(np.float32)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0)
    model = make_pipeline(StandardScaler(), classifier)
    model.fit(data, iris.target)

    # One float tensor in; the class index and a plain probabilities tensor out (no ZipMap of dicts).
    onx = to_onnx(
        model,
        initial_types=[("measurements", FloatTensorType([None, len(FEATURES)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    onx.producer_name = "cortado-examples"
    labels = [str(name) for name in iris.target_names]
    onnx.helper.set_model_props(onx, {"features": json.dumps(FEATURES), "labels": json.dumps(labels)})
    args.output.write_bytes(onx.SerializeToString())

    # The ONNX graph must answer as scikit-learn does.
    session = onnxruntime.InferenceSession(str(args.output), providers=["CPUExecutionProvider"])
    index, probabilities = session.run(None, {"measurements": data})
    assert (index == model.predict(data)).all(), "ONNX classes differ from scikit-learn's"
    assert np.allclose(probabilities, model.predict_proba(data), atol=1e-5), "ONNX probabilities differ"
    accuracy = float((index == iris.target).mean())
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes); training accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
