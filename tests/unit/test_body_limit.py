"""One body limit (cortado.runtime.MAX_BODY_BYTES) for Envoy's HTTP routes and ingest's gRPC calls, and ingest's
settings for JSON bodies."""

from __future__ import annotations

import pytest
import yaml

from cortado import mesh
from cortado._env import Env, SettingsError
from cortado.runtime.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, JsonLimits
from services.ingest.config import MAX_SUBMIT_MESSAGE_BYTES, IngestSettings
from services.ingest.submitter import body_too_large


def test_envoy_and_ingest_share_the_body_limit() -> None:
    assert MAX_BODY_BYTES == 32 * 2**20
    config = yaml.safe_load(mesh.render_envoy_config(8888, 9901, ["127.0.0.1:1"], ["127.0.0.1:2"]))
    transcoders = [
        f["typed_config"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"][0]["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]
    assert transcoders and all(t["max_request_body_size"] == MAX_BODY_BYTES for t in transcoders)
    assert MAX_BODY_BYTES < MAX_SUBMIT_MESSAGE_BYTES <= MAX_BODY_BYTES + 2**20


def test_a_body_over_the_limit_is_refused_naming_the_limit() -> None:
    assert body_too_large(MAX_BODY_BYTES + 1) == (
        "the request body is 33,554,433 bytes, larger than the 32 MiB limit (33,554,432 bytes); "
        "it is refused whatever the retry"
    )


def test_ingest_reads_the_json_limits_from_its_settings() -> None:
    assert IngestSettings.from_env(Env({})).json_limits == JsonLimits(max_depth=128, max_values=1_000_000)
    settings = IngestSettings.from_env(Env({"CORTADO_MAX_JSON_DEPTH": "512", "CORTADO_MAX_JSON_VALUES": "50"}))
    assert settings.json_limits == JsonLimits(max_depth=MAX_JSON_DEPTH, max_values=50)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CORTADO_MAX_JSON_DEPTH", "513", "CORTADO_MAX_JSON_DEPTH must be at most 512, got 513"),
        ("CORTADO_MAX_JSON_DEPTH", "0", "CORTADO_MAX_JSON_DEPTH must be at least 1, got 0"),
        ("CORTADO_MAX_JSON_VALUES", "0", "CORTADO_MAX_JSON_VALUES must be at least 1, got 0"),
        ("CORTADO_MAX_JSON_VALUES", "many", "CORTADO_MAX_JSON_VALUES must be an integer, got 'many'"),
    ],
)
def test_a_json_limit_setting_out_of_range_stops_ingest_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        IngestSettings.from_env(Env({name: value}))
    assert str(caught.value) == message
