"""The `tensorflow_client` of a TensorFlow handler: its SavedModels, loaded once and run in the handler's process.

Cortex ran TensorFlow Serving beside the handler and talked to it over gRPC; no TF Serving binary is published on
PyPI, so Cortado loads the SavedModels with TensorFlow's own runtime, in the handler process, and implements the
same client: `predict(model_input, model_name=None, model_version=None)` runs the model's signature on a dict of
input names to values and answers a dict of output names to nested lists.

Where models come from (`handler.models`): `path` (one model), `paths` (named models) or `dir` (a folder with one
sub-folder per model, named by it). A model's folder holds `saved_model.pb`, or numbered version folders that
each do; the highest version serves unless `model_version` asks for another. Imported only by handler processes of
tensorflow handlers: TensorFlow is never a dependency of the services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from cortado.v1 import control_pb2

SAVED_MODEL = "saved_model.pb"
DEFAULT_SIGNATURE = "serving_default"


class ModelLoadError(Exception):
    """A configured model cannot be found or loaded; the message names the model, the folder and why."""


@dataclass(frozen=True)
class ServedModel:
    """One version of one model: the signature it runs and the inputs that signature takes."""

    name: str
    version: int | None
    signature_key: str
    function: Any
    inputs: Mapping[str, Any]
    """Input name to tf.TensorSpec (dtype and shape)."""
    loaded: Any
    """The loaded SavedModel, kept so that its variables live as long as the function."""


def use_memory_growth() -> None:
    """Let TensorFlow take GPU memory as it needs it rather than all at once, so replicas sharing nothing by
    accident stay apart (called before anything else touches the GPUs)."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def model_versions(folder: Path, name: str) -> dict[int | None, Path]:
    """The version folders of a model (None: the folder itself holds the SavedModel); ModelLoadError if none."""
    if (folder / SAVED_MODEL).is_file():
        return {None: folder}
    if not folder.is_dir():
        raise ModelLoadError(f"model {name or 'of handler.models.path'!r}: {folder} is not a folder")
    versions: dict[int | None, Path] = {
        int(child.name): child for child in folder.iterdir() if child.name.isdigit() and (child / SAVED_MODEL).is_file()
    }
    if not versions:
        raise ModelLoadError(
            f"model {name or 'of handler.models.path'!r}: {folder} holds no {SAVED_MODEL}, "
            f"nor numbered version folders that do"
        )
    return versions


def _signature(loaded: Any, name: str, wanted: str) -> tuple[str, Any]:
    keys = sorted(loaded.signatures.keys())
    label = f"model {name!r}" if name else "the model"
    if wanted:
        if wanted not in keys:
            raise ModelLoadError(f"{label} has no signature {wanted!r} (it has: {', '.join(keys) or 'none'})")
        return wanted, loaded.signatures[wanted]
    if len(keys) == 1:
        return keys[0], loaded.signatures[keys[0]]
    if DEFAULT_SIGNATURE in keys:
        return DEFAULT_SIGNATURE, loaded.signatures[DEFAULT_SIGNATURE]
    raise ModelLoadError(
        f"{label} has signatures {', '.join(keys) or 'none'}: set signature_key in handler.models to pick one"
    )


def load_model(name: str, version: int | None, folder: Path, signature_key: str) -> ServedModel:
    """Load one SavedModel version and pick its signature."""
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"model {name or 'of handler.models.path'!r}: cannot load {folder}: {exc}") from exc
    key, function = _signature(loaded, name, signature_key)
    inputs = dict(function.structured_input_signature[1])
    return ServedModel(name, version, key, function, inputs, loaded)


def _sources(spec: control_pb2.ApiSpec, root: Path) -> list[tuple[str, Path, str]]:
    """(model name, folder, signature key) of every configured model; relative paths are the project's."""
    sources = [(m.name, root / m.path, m.signature_key or spec.signature_key) for m in spec.models]
    if spec.models_dir:
        folder = root / spec.models_dir
        if not folder.is_dir():
            raise ModelLoadError(f"handler.models.dir: {folder} is not a folder")
        children = sorted(c for c in folder.iterdir() if c.is_dir())
        if not children:
            raise ModelLoadError(f"handler.models.dir: {folder} holds no model folders")
        sources += [(child.name, child, spec.signature_key) for child in children]
    return sources


def _python(tensor: Any) -> Any:
    """A tensor as nested lists (strings decoded as UTF-8, as JSON wants them)."""
    value = tensor.numpy().tolist()
    return _decode(value) if tensor.dtype == tf.string else value


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class TensorFlowClient:
    """Runs the API's SavedModels: `predict(model_input, model_name=None, model_version=None)`."""

    def __init__(self, models: Mapping[str, Mapping[int | None, ServedModel]]) -> None:
        self._models = models

    @classmethod
    def load(cls, spec: control_pb2.ApiSpec, root: Path) -> TensorFlowClient:
        """Load every version of every model the spec names (relative paths under root, the project folder)."""
        use_memory_growth()
        models: dict[str, dict[int | None, ServedModel]] = {}
        for name, folder, signature_key in _sources(spec, root):
            models[name] = {
                version: load_model(name, version, path, signature_key)
                for version, path in sorted(model_versions(folder, name).items(), key=lambda v: v[0] or 0)
            }
        return cls(models)

    @property
    def models(self) -> dict[str, list[int | None]]:
        """Each model's name and its versions, lowest first."""
        return {name: sorted(versions, key=lambda v: v or 0) for name, versions in self._models.items()}

    def _pick(self, model_name: str | None, model_version: int | str | None) -> ServedModel:
        names = sorted(self._models)
        if model_name is None:
            if len(names) != 1:
                raise ValueError(f"model_name is required: this API serves the models {', '.join(names)}")
            model_name = names[0]
        versions = self._models.get(model_name)
        if versions is None and names == [""]:
            raise ValueError(
                f"this API serves one model (handler.models.path), not {model_name!r}: call predict without model_name"
            )
        if versions is None:
            served = ", ".join(repr(n) for n in names)
            raise ValueError(f"model {model_name!r} is not served by this API (it serves {served})")
        if model_version is None or model_version == "latest":
            return versions[max(versions, key=lambda v: v or 0)]
        try:
            wanted: int | None = int(model_version)
        except (TypeError, ValueError):
            raise ValueError(f"model_version must be a version number, not {model_version!r}") from None
        if wanted not in versions:
            known = ", ".join(str(v) for v in versions if v is not None) or "none: the model is not versioned"
            raise ValueError(f"model {model_name!r} has no version {wanted} (versions: {known})")
        return versions[wanted]

    def predict(
        self, model_input: Any, model_name: str | None = None, model_version: int | str | None = None
    ) -> dict[str, Any]:
        """Run the model's signature on model_input: a dict of the signature's input names to values (for a
        signature with one input, the value alone will do). A dict of output names to nested lists.

        model_name picks the model when the API serves several (`paths`, `dir`); model_version a version (default:
        the highest). ValueError names a wrong model, version or input; TensorFlow's own errors (a bad shape or
        type) propagate with its message.
        """
        served = self._pick(model_name, model_version)
        if not isinstance(model_input, Mapping):
            if len(served.inputs) != 1:
                raise ValueError(
                    f"model_input must be a dict of the signature's inputs ({', '.join(sorted(served.inputs))})"
                )
            model_input = {next(iter(served.inputs)): model_input}
        missing = sorted(set(served.inputs) - set(model_input))
        unknown = sorted(set(model_input) - set(served.inputs))
        if missing or unknown:
            parts = [f"lacks {', '.join(missing)}"] if missing else []
            parts += [f"has no input named {', '.join(unknown)}"] if unknown else []
            raise ValueError(
                f"model_input {' and '.join(parts)}: signature {served.signature_key!r} takes "
                f"{', '.join(sorted(served.inputs))}"
            )
        tensors = {
            name: tf.convert_to_tensor(model_input[name], dtype=spec.dtype) for name, spec in served.inputs.items()
        }
        outputs = served.function(**tensors)
        return {name: _python(tensor) for name, tensor in outputs.items()}
