"""Loading the project's handler inside the handler process."""

from __future__ import annotations

import json
from pathlib import Path

from cortado._metrics import MetricsClient
from cortado.runtime import HandlerInstance, load_handler_class
from cortado.v1 import control_pb2


def load_handler(spec: control_pb2.ApiSpec) -> HandlerInstance:
    """Import the project's handler (the working directory is the project folder) and construct it.

    Exceptions (an import error, `__init__` raising, a TensorFlow model that does not load) propagate for
    the caller to report.
    """
    root = Path.cwd()
    python_path = (root / spec.python_path) if spec.python_path else root
    handler_type = spec.handler_type or "python"
    tensorflow_client = None
    if handler_type == "tensorflow":
        # TensorFlow is imported only here: a python handler's process never loads it.
        from cortado._tfclient import TensorFlowClient

        tensorflow_client = TensorFlowClient.load(spec, root)
    handler_class = load_handler_class(root / spec.handler_path, python_path, handler_type=handler_type)
    config = json.loads(spec.handler_config_json or b"{}")
    return HandlerInstance.create(handler_class, config, MetricsClient(spec.name), tensorflow_client)
