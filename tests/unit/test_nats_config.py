"""The local NATS server's configuration: how often JetStream's files are fsynced, checked by nats-server itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cortado.mesh import NATS_SYNC_INTERVAL, MeshError, find_binary, nats_config


@pytest.mark.parametrize("interval", [NATS_SYNC_INTERVAL, "always", "500ms"])
def test_nats_server_accepts_the_sync_interval(tmp_path: Path, interval: str) -> None:
    config = tmp_path / "nats.conf"
    config.write_text(nats_config(4222, tmp_path / "store", sync_interval=interval))
    assert f'  sync_interval: "{interval}"\n' in config.read_text()
    checked = subprocess.run(
        [find_binary("nats-server"), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_default_is_nats_servers_own_two_minutes() -> None:
    assert NATS_SYNC_INTERVAL == "2m"
    assert '  sync_interval: "2m"\n' in nats_config(4222, Path("/tmp/store"))


def test_a_malformed_interval_is_a_clear_error() -> None:
    with pytest.raises(MeshError, match="CORTADO_NATS_SYNC_INTERVAL must be `always` or a duration such as 2m"):
        nats_config(4222, Path("/tmp/store"), sync_interval="often\n}")
