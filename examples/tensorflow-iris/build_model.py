"""Build the SavedModel this example serves: `python build_model.py` writes model/1/.

A nearest-centroid iris classifier: the mean measurements of each species, from the iris data set scikit-learn
ships, and a softmax over the negative squared distances to them. The signature takes the four measurements as
scalars (as Cortex's TensorFlow iris example did) and answers `class_ids` and `probabilities`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class NearestCentroid(tf.Module):
    def __init__(self, centroids: np.ndarray) -> None:
        super().__init__()
        self.centroids = tf.Variable(centroids, dtype=tf.float32, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name=name) for name in FEATURES])
    def serve(self, sepal_length, sepal_width, petal_length, petal_width):  # type: ignore[no-untyped-def]
        flower = tf.stack([sepal_length, sepal_width, petal_length, petal_width])
        distances = tf.reduce_sum(tf.square(self.centroids - flower), axis=1)
        probabilities = tf.nn.softmax(-distances)
        return {
            "class_ids": tf.reshape(tf.argmax(probabilities, output_type=tf.int64), [1]),
            "probabilities": probabilities,
        }


def main(out: Path) -> None:
    iris = load_iris()
    centroids = np.stack([iris.data[iris.target == label].mean(axis=0) for label in range(3)])
    model = NearestCentroid(centroids)
    tf.saved_model.save(model, str(out / "1"), signatures={"serving_default": model.serve})
    print(f"wrote {out / '1'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "model")
