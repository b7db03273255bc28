"""SavedModels for the tests of tensorflow handlers: `python tests/tf_models.py <folder>` writes

- `double/1` (y = 2x) and `double/2` (y = 3x): one input `x` (float32, shape [None]), output `y`;
- `two_signatures`: unversioned, signatures `add` (y = x + 1) and `mul` (y = 10x), no serving_default.

Run as a script (a process of its own), as a user builds models: TensorFlow stays out of the test process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf


class Scale(tf.Module):  # type: ignore[misc]  # tensorflow has no types: tf.Module is Any
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = tf.Variable(factor, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):  # type: ignore[no-untyped-def]
        return {"y": x * self.factor}


class TwoWays(tf.Module):  # type: ignore[misc]  # tensorflow has no types: tf.Module is Any
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def add(self, x):  # type: ignore[no-untyped-def]
        return {"y": x + 1.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def mul(self, x):  # type: ignore[no-untyped-def]
        return {"y": x * 10.0}


def main(out: Path) -> None:
    for version, factor in ((1, 2.0), (2, 3.0)):
        model = Scale(factor)
        tf.saved_model.save(model, str(out / "double" / str(version)), signatures={"serving_default": model.serve})
    both = TwoWays()
    tf.saved_model.save(both, str(out / "two_signatures"), signatures={"add": both.add, "mul": both.mul})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
