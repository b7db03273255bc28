"""The handler contract (README, "Writing a handler"): checking and loading handlers, calling them, decoding payloads,
encoding results.

| module | holds |
|---|---|
| `rules` | what a handler class must be: its name, the parameters its methods take, the messages for breaking them |
| `handlercheck` | `check_handler_source`: the deploy-time check of a handler file's source, nothing run |
| `loading` | `load_handler_class`: importing a handler file and checking the class Python built |
| `calling` | `HandlerInstance`: constructing a handler and calling its methods with arguments by name |
| `limits` | `MAX_BODY_BYTES`, `MAX_JSON_DEPTH`, `JsonLimits`: what a request body may be |
| `payloads` | `decode_payload`, and `validate_payload`/`check_payload` that judge a body as decoding would |
| `encoding` | `dumps_json`/`loads_json` (integers of any size), `encode_result`, `split_batch_result` |
| `errors` | `HandlerDefinitionError`, `PayloadError`, `InvalidResultError`, `describe_exception` |
"""

from cortado.runtime.calling import HandlerInstance
from cortado.runtime.encoding import (
    decimal_to_int,
    dumps_json,
    encode_result,
    int_to_decimal,
    loads_json,
    split_batch_result,
)
from cortado.runtime.errors import HandlerDefinitionError, InvalidResultError, PayloadError, describe_exception
from cortado.runtime.handlercheck import check_handler_source
from cortado.runtime.limits import DEFAULT_JSON_DEPTH, DEFAULT_JSON_VALUES, MAX_BODY_BYTES, MAX_JSON_DEPTH, JsonLimits
from cortado.runtime.loading import load_handler_class
from cortado.runtime.payloads import check_payload, decode_payload, validate_payload
from cortado.runtime.rules import (
    ALLOWED_BATCH_PARAMS,
    ALLOWED_HANDLE_PARAMS,
    ALLOWED_INIT_PARAMS,
    TENSORFLOW_INIT_PARAMS,
    init_params_for,
)

__all__ = [
    "ALLOWED_BATCH_PARAMS",
    "ALLOWED_HANDLE_PARAMS",
    "ALLOWED_INIT_PARAMS",
    "DEFAULT_JSON_DEPTH",
    "DEFAULT_JSON_VALUES",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "TENSORFLOW_INIT_PARAMS",
    "HandlerDefinitionError",
    "HandlerInstance",
    "InvalidResultError",
    "JsonLimits",
    "PayloadError",
    "check_handler_source",
    "check_payload",
    "decimal_to_int",
    "decode_payload",
    "describe_exception",
    "dumps_json",
    "encode_result",
    "init_params_for",
    "int_to_decimal",
    "load_handler_class",
    "loads_json",
    "split_batch_result",
    "validate_payload",
]
