"""Dead letters: requests Cortado gave up on, listed by `cortado dead-letters` and replayed by `cortado replay`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.cli_support import Cli
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

# Its process dies on every request until the file named in the config exists (a bug, fixed in place).
DIES_UNTIL_FIXED = """
import os
import signal


class Handler:
    def __init__(self, config):
        self.fixed = config["fixed"]

    def handle_async(self, payload):
        if not os.path.exists(self.fixed):
            os.kill(os.getpid(), signal.SIGKILL)
        return {"echo": payload}
"""


def test_a_request_given_up_on_is_a_dead_letter_to_list_and_replay(
    deploy: Deploy, http: httpx.Client, cli: Cli, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    api = deploy(DIES_UNTIL_FIXED, api={"handler": {"max_retries": 0, "config": {"fixed": str(fixed)}}})
    doomed = submit(http, api, json={"n": 7})
    body = result(http, api, doomed)
    assert body["status"] == "failed" and body["error"]["type"] == "HandlerProcessDied", body

    listed = eventually(lambda: (run := cli("dead-letters", api)).code == 0 and doomed in run.out and run, timeout=10)
    assert "HandlerProcessDied" in listed.out
    assert f"replay one with: cortado replay {api} <id>" in listed.out
    letters = json.loads(cli("dead-letters", api, "-o", "json").out)
    assert [letter["id"] for letter in letters] == [doomed]
    assert letters[0]["error_type"] == "HandlerProcessDied"
    assert "giving up after max_retries=0" in letters[0]["error_message"]
    assert letters[0]["content_type"] == "application/json"

    # The bug is fixed: the replay runs the same body under a new id, and the letter is gone.
    fixed.touch()
    replayed = cli("replay", api, doomed)
    assert replayed.code == 0, replayed
    new_id = replayed.out.strip()
    assert new_id != doomed and len(new_id) == 32
    assert result(http, api, new_id)["result"] == {"echo": {"n": 7}}
    assert http.get(f"/{api}/{doomed}").json()["status"] == "failed"  # the original stays as it ended
    assert cli("dead-letters", api).out == f"{api} has no dead letters\n"

    again = cli("replay", api, doomed)
    assert again.code == 1
    assert (
        f"error: API {api!r} has no dead letter {doomed!r} (never failed that way, replayed already, or expired)"
        in (again.err)
    )


def test_dead_letters_of_an_unknown_api_are_refused_with_its_name(cli: Cli) -> None:
    run = cli("dead-letters", "no-such-api")
    assert run.code == 1
    assert run.err == "error: API 'no-such-api' is not deployed\n"
