"""The handlers of the handler-contract tests: one per way to write __init__ and handle_async, ones that break the
interface, raise or die, and the config and project files they read."""

from __future__ import annotations

BIG = 2**70  # far past 2**53, where floating-point JSON parsers lose digits


# --- the handlers shared by most tests, deployed once for the module -------------------------------------------------

NO_INIT = """
import os

class Handler:
    def handle_async(self):
        return {"called_with": "nothing", "pid": os.getpid()}
"""


INIT_SELF_READS_PROJECT_FILE = """
import json
import os

class Handler:
    def __init__(self):
        with open("data/values.json") as values_file:
            self.values = json.load(values_file)
        self.cwd_holds_handler = os.path.isfile("handler.py")

    def handle_async(self, payload):
        return {"payload": payload, "values": self.values, "cwd_holds_handler": self.cwd_holds_handler}
"""


INIT_CONFIG = """
import json

class Handler:
    def __init__(self, config):
        self.config_text = json.dumps(config)
        self.config_type = type(config).__name__
        config["nested"]["items"].append("changed by the handler")  # a plain dict the handler may change
        config["added"] = True
        self.changed = config

    def handle_async(self, request_id):
        return {
            "request_id": request_id,
            "config": json.loads(self.config_text),
            "config_type": self.config_type,
            "changed": self.changed,
        }
"""


INIT_REVERSED = """
class Handler:
    def __init__(self, metrics_client, config):
        self.config = config
        metrics_client.increment("handler_constructed")
        self.metrics_client_type = type(metrics_client).__name__

    def handle_async(self, request_id, payload):
        return {
            "request_id": request_id,
            "payload": payload,
            "config": self.config,
            "metrics_client_type": self.metrics_client_type,
        }
"""


ASYNC_ECHO = """
import asyncio
import os


class ModelError(Exception):
    pass


RESULTS = {
    "list": lambda: [1, 2, 3],
    "str": lambda: "done",
    "none": lambda: None,
    "nan": lambda: {"score": float("nan")},
    "infinity": lambda: {"score": float("inf")},
    "ordered": lambda: {"z": 1, "a": 2, "m": 3},
    "big": lambda: {"big": 2**70, "negative": -(2**64) - 1, "edge": 2**53 + 1},
}


def describe(payload):
    if isinstance(payload, bytes):
        return {"type": "bytes", "len": len(payload), "hex": payload.hex()}
    return {"type": type(payload).__name__, "value": payload}


class Handler:
    async def handle_async(self, payload, request_id):
        await asyncio.sleep(0)
        if isinstance(payload, dict) and "action" in payload:
            if payload["action"] == "raise":
                raise ModelError(payload["message"])
            return RESULTS[payload["action"]]()
        return {**describe(payload), "request_id": request_id, "pid": os.getpid()}
"""


CONFIG = {
    "nested": {"items": [1, {"deep": True}], "name": "café"},
    "big": BIG,
    "ratio": 0.25,
}


VALUES = {"classes": ["setosa", "versicolor", "virginica"], "threshold": 0.5}


# --- deploy-time checks ----------------------------------------------------------------------------------------------

BAD_HANDLERS = {
    "handle_async_parameter": (
        """
        class Handler:
            def handle_async(self, payload, context):
                return {}
        """,
        "context",
    ),
    "init_parameter": (
        """
        class Handler:
            def __init__(self, config, model_path):
                pass

            def handle_async(self, payload):
                return {}
        """,
        "model_path",
    ),
    "class_named_Handle": (
        """
        class Handle:
            def __init__(self, config):
                pass

            def handle_async(self, payload):
                return {}
        """,
        "Handler",
    ),
}


INIT_RAISES = """
class Handler:
    def __init__(self, config):
        with open(config["attempts_file"], "a") as attempts:
            attempts.write("attempt\\n")
        raise RuntimeError("the model weights are missing")

    def handle_async(self, payload):
        return {}
"""


DIES_ON_REQUEST = """
import os
import signal

class Handler:
    def __init__(self, config):
        self.last_words = config["last_words"]

    def handle_async(self, payload):
        if payload == {"die": True}:
            with open(self.last_words, "a") as last_words:
                last_words.write(f"{os.getpid()}\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return {"pid": os.getpid()}
"""
