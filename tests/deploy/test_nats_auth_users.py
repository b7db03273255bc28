"""NATS authentication in deploy/: both NATS configurations carry exactly cortado._natsauth's users and permissions,
and every password comes from the environment."""

from __future__ import annotations

from typing import Any

import pytest

from cortado._natsauth import PERMISSIONS, ROUTE_USER, NatsCredentials, authorization_config
from tests.deploy.manifests import (
    base_documents,
    nats_password_variable,
)
from tests.deploy.natsconf import Variable, parse
from tests.deploy.natsusers import COMPOSE_NATS_CONF, k8s_nats_conf


def expected_permissions() -> dict[str, dict[str, list[str]]]:
    return {
        user: {"publish": sorted(allowed["publish"]), "subscribe": sorted(allowed["subscribe"])}
        for user, allowed in PERMISSIONS.items()
    }


def users(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `authorization { users: [...] }` block, by user; each entry has a user, a password and permissions."""
    block = config["authorization"]
    assert set(block) == {"users"}, "users only: no single `user`/`token`, no default permissions"
    found: dict[str, dict[str, Any]] = {}
    for entry in block["users"]:
        assert set(entry) == {"user", "password", "permissions"}, entry
        assert entry["user"] not in found, f"{entry['user']} is listed twice"
        found[entry["user"]] = entry
    return found


def permissions(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Each user's allowed publish and subscribe subjects (sorted: their order means nothing to NATS)."""
    result = {}
    for user, entry in users(config).items():
        allowed = entry["permissions"]
        assert set(allowed) == {"publish", "subscribe"}, user
        for direction in allowed.values():
            assert set(direction) == {"allow"}, f"{user}: allow lists only, as cortado._natsauth writes them"
        result[user] = {direction: sorted(allowed[direction]["allow"]) for direction in ("publish", "subscribe")}
    return result


def configurations() -> dict[str, dict[str, Any]]:
    return {
        "compose": parse(COMPOSE_NATS_CONF.read_text()),
        "kubernetes": parse(k8s_nats_conf(base_documents())),
    }


# --- the users and their permissions are cortado._natsauth's -----------------------------------------------


def test_the_reader_reads_the_authorization_block_the_local_mesh_writes() -> None:
    """The same reader on natsauth's own rendering gives back PERMISSIONS: what it finds in deploy/ can be trusted."""
    credentials = {user: NatsCredentials(user, f"pw-{user}") for user in [*PERMISSIONS, ROUTE_USER]}
    config = parse(authorization_config(credentials))
    assert permissions(config) == expected_permissions()
    assert {user: entry["password"] for user, entry in users(config).items()} == {
        user: f"pw-{user}" for user in PERMISSIONS
    }


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_nats_users_and_their_permissions_are_cortados(where: str) -> None:
    config = configurations()[where]
    assert permissions(config) == expected_permissions(), (
        f"the {where} NATS configuration and cortado._natsauth.PERMISSIONS differ: change the config "
        "(deploy/nats/nats.conf, deploy/k8s/base/nats.yaml) to match natsauth"
    )


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_password_comes_from_the_environment_and_none_is_written_down(where: str) -> None:
    for user, entry in users(configurations()[where]).items():
        assert entry["password"] == Variable(nats_password_variable(user)), user


def test_the_kubernetes_servers_authenticate_their_routes_as_the_route_user() -> None:
    cluster = configurations()["kubernetes"]["cluster"]
    assert cluster["authorization"] == {"user": ROUTE_USER, "password": Variable(nats_password_variable(ROUTE_USER))}
    assert cluster["routes"] == Variable("CORTADO_NATS_ROUTES")
    assert ROUTE_USER not in users(configurations()["kubernetes"]), "the route user is not a client"


def test_compose_runs_one_server_without_routes() -> None:
    assert "cluster" not in configurations()["compose"]
