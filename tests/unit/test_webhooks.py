"""Webhooks: signatures a Standard Webhooks receiver verifies, where webhooks may go, back-off, delivery state."""

from __future__ import annotations

import base64
import random
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cortado import webhooks
from cortado._env import Env, SettingsError
from cortado.records.delivery import parse_ttl
from cortado.v1 import control_pb2, records_pb2
from cortado.webhooks import UrlPolicy, WebhookUrlError, check_resolved, check_url

BODY = '{"id":"r1","status":"completed","result":{"n":123456789012345678901234,"é":"ü"}}'.encode()


# Secrets and signatures


def test_a_new_secret_is_whsec_and_base64_of_enough_random_bytes() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 32
    assert webhooks.new_secret() != secret


def test_a_signed_webhook_verifies_with_the_standard_webhooks_library() -> None:
    secret = webhooks.new_secret()
    headers = webhooks.signature_headers([secret], "r1", int(time.time()), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "r1"
    assert Webhook(secret).verify(BODY, headers) == {
        "id": "r1",
        "status": "completed",
        "result": {"n": 123456789012345678901234, "é": "ü"},
    }


def test_the_signature_is_the_one_the_specification_computes() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = webhooks.signature_headers([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    # The specification's own example.
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_with_two_secrets_a_receiver_knowing_either_verifies_and_one_knowing_neither_does_not() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    headers = webhooks.signature_headers([new, old], "r1", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(BODY + b" ", headers)


def test_signing_needs_a_well_formed_secret() -> None:
    with pytest.raises(ValueError, match="at least one signing secret"):
        webhooks.signature_headers([], "r1", 1, BODY)
    with pytest.raises(ValueError, match="base64"):
        webhooks.signature_headers(["whsec_not base64!"], "r1", 1, BODY)
    with pytest.raises(ValueError, match="empty"):
        webhooks.signature_headers(["whsec_"], "r1", 1, BODY)


def test_the_previous_secret_signs_until_previous_until() -> None:
    stored = control_pb2.WebhookSecrets(current="whsec_new", previous="whsec_old")
    stored.previous_until.FromSeconds(1000)
    assert webhooks.active_secrets(stored, 999.5) == ["whsec_new", "whsec_old"]
    assert webhooks.active_secrets(stored, 1000.0) == ["whsec_new"]
    assert webhooks.active_secrets(control_pb2.WebhookSecrets(current="whsec_new"), 0) == ["whsec_new"]
    assert webhooks.active_secrets(control_pb2.WebhookSecrets(), 0) == []


# Where webhooks may go

POLICY = UrlPolicy.of(mesh_hosts=["my-nats"], mesh_ports=[18080])
ALLOW = "set CORTADO_WEBHOOK_ALLOW_HOSTS="


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "webhook URL must start with http:// or https://, got scheme 'ftp'"),
        ("example.com/hook", "webhook URL must start with http:// or https://, got scheme 'none'"),
        ("http:///hook", "webhook URL has no host"),
        ("https://exa mple.com/", "webhook URL may not contain spaces, control characters or backslashes"),
        (
            "https://example.com\\@169.254.169.254/",
            "webhook URL may not contain spaces, control characters or backslashes",
        ),
        ("http://example.com:99999/", "webhook URL is malformed: Port out of range 0-65535"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "webhook URL host 169.254.169.254 is a link-local address (169.254.0.0/16, fe80::/10), where cloud "
            f"metadata answers; {ALLOW}169.254.169.254 to allow it",
        ),
        (
            "http://[fe80::1%25eth0]:8080/",
            "webhook URL host fe80::1 is a link-local address (169.254.0.0/16, fe80::/10), where cloud metadata "
            f"answers; {ALLOW}fe80::1 to allow it",
        ),
        (
            "http://[::ffff:169.254.169.254]/",
            "webhook URL host 169.254.169.254 is a link-local address (169.254.0.0/16, fe80::/10), where cloud "
            f"metadata answers; {ALLOW}169.254.169.254 to allow it",
        ),
        (
            # 169.254.169.254 as one number, as the system resolver reads it.
            "http://2852039166/",
            "webhook URL host 169.254.169.254 is a link-local address (169.254.0.0/16, fe80::/10), where cloud "
            f"metadata answers; {ALLOW}169.254.169.254 to allow it",
        ),
        (
            "http://[fd00:ec2::254]/",
            f"webhook URL host fd00:ec2::254 is a cloud metadata address; {ALLOW}fd00:ec2::254 to allow it",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            f"webhook URL host metadata.google.internal is a cloud metadata service; "
            f"{ALLOW}metadata.google.internal to allow it",
        ),
        ("http://METADATA./", f"webhook URL host metadata is a cloud metadata service; {ALLOW}metadata to allow it"),
        (
            "http://instance-data/latest/",
            f"webhook URL host instance-data is a cloud metadata service; {ALLOW}instance-data to allow it",
        ),
        (
            "http://api-iris/",
            f"webhook URL host api-iris is an API of the mesh itself (api-<name>); {ALLOW}api-iris to allow it",
        ),
        (
            "http://api-iris.prod.svc.cluster.local:8080/",
            "webhook URL host api-iris.prod.svc.cluster.local is an API of the mesh itself (api-<name>); "
            f"{ALLOW}api-iris.prod.svc.cluster.local to allow it",
        ),
        (
            "http://ingest:50051/",
            f"webhook URL host ingest is a service of the mesh itself; {ALLOW}ingest to allow it",
        ),
        (
            "http://nats.cortado.svc/",
            f"webhook URL host nats.cortado.svc is a service of the mesh itself; {ALLOW}nats.cortado.svc to allow it",
        ),
        (
            "http://my-nats/",
            f"webhook URL host my-nats is a service of the mesh itself; {ALLOW}my-nats to allow it",
        ),
        (
            "http://127.0.0.1:4222/",
            "webhook URL host 127.0.0.1 is a loopback address on port 4222, a port of the mesh itself; "
            f"{ALLOW}127.0.0.1:4222 to allow it",
        ),
        (
            "http://127.0.0.1:18080/",
            "webhook URL host 127.0.0.1 is a loopback address on port 18080, a port of the mesh itself; "
            f"{ALLOW}127.0.0.1:18080 to allow it",
        ),
        (
            "http://[::1]:9901/",
            f"webhook URL host ::1 is a loopback address on port 9901, a port of the mesh itself; {ALLOW}[::1]:9901 "
            "to allow it",
        ),
        (
            "http://0.0.0.0:50052/",
            "webhook URL host 0.0.0.0 is an address of this machine on port 50052, a port of the mesh itself; "
            f"{ALLOW}0.0.0.0:50052 to allow it",
        ),
        (
            "http://localhost:8888/",
            "webhook URL host localhost is loopback on port 8888, a port of the mesh itself; "
            f"{ALLOW}localhost:8888 to allow it",
        ),
    ],
)
def test_a_refused_url_says_what_is_wrong_and_which_setting_allows_it(url: str, message: str) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        check_url(url, POLICY)
    assert str(refused.value) == message


def test_urls_longer_than_2048_characters_are_refused() -> None:
    base = "https://example.com/"
    assert check_url(base + "a" * (2048 - len(base)), POLICY)
    with pytest.raises(WebhookUrlError) as refused:
        check_url(base + "a" * (2049 - len(base)), POLICY)
    assert str(refused.value) == "webhook URL is 2049 characters long; at most 2048 are allowed"


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://Example.COM:443/Hook?a=1&b=2#part", "https://example.com/Hook?a=1&b=2"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com.:8080/x", "http://example.com:8080/x"),
        ("https://user:pass@example.com/x", "https://user:pass@example.com/x"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://0x7f.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://[::1]:8080/hook", "http://[::1]:8080/hook"),
        # Public names that merely start like the mesh's are not the mesh's.
        ("https://api-eu.example.com/hook", "https://api-eu.example.com/hook"),
        ("https://nats.io/hook", "https://nats.io/hook"),
    ],
)
def test_an_allowed_url_comes_back_normalised(url: str, normalised: str) -> None:
    assert check_url(url, POLICY) == normalised


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("169.254.169.254", "http://169.254.169.254/latest"),
        ("metadata.google.internal", "http://metadata.google.internal/"),
        ("api-iris", "http://api-iris:8080/"),
        ("ingest", "http://ingest:50051/"),
        ("127.0.0.1:4222", "http://127.0.0.1:4222/"),
        ("[::1]:9901", "http://[::1]:9901/"),
        ("localhost", "http://localhost:8888/"),
        (" Ingest , other ", "http://ingest/"),
        ("*", "http://169.254.169.254/"),
    ],
)
def test_the_operator_can_allow_a_refused_host(allowed: str, url: str) -> None:
    policy = UrlPolicy.from_env(Env({"CORTADO_WEBHOOK_ALLOW_HOSTS": allowed}))
    assert check_url(url, policy)
    assert check_url(url, UrlPolicy.of(allowed.split(",")))


def test_allowing_a_host_on_one_port_does_not_allow_its_other_ports() -> None:
    policy = UrlPolicy.of(["127.0.0.1:4222"])
    assert check_url("http://127.0.0.1:4222/", policy)
    with pytest.raises(WebhookUrlError, match="on port 6222"):
        check_url("http://127.0.0.1:6222/", policy)


def test_even_star_refuses_what_is_not_a_webhook_url() -> None:
    policy = UrlPolicy.of(["*"])
    with pytest.raises(WebhookUrlError, match="http:// or https://"):
        check_url("file:///etc/passwd", policy)
    with pytest.raises(WebhookUrlError, match="no host"):
        check_url("http:///x", policy)


def test_mesh_hosts_and_ports_come_from_the_environment_besides_the_defaults() -> None:
    env = Env({"CORTADO_WEBHOOK_MESH_HOSTS": "Queue, ,", "CORTADO_WEBHOOK_MESH_PORTS": "15000, 15001"})
    policy = UrlPolicy.from_env(env)
    assert {"queue", "ingest"} <= policy.mesh_hosts
    assert {15000, 15001, 4222} <= policy.mesh_ports
    with pytest.raises(WebhookUrlError, match="a service of the mesh itself"):
        check_url("http://queue/", policy)
    with pytest.raises(WebhookUrlError, match="on port 15001"):
        check_url("http://127.0.0.1:15001/", policy)


def test_a_malformed_mesh_port_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="CORTADO_WEBHOOK_MESH_PORTS must be comma-separated ports, got 'x'"):
        UrlPolicy.from_env(Env({"CORTADO_WEBHOOK_MESH_PORTS": "4222,x"}))
    with pytest.raises(SettingsError, match="got '70000'"):
        UrlPolicy.from_env(Env({"CORTADO_WEBHOOK_MESH_PORTS": "70000"}))


def test_a_harmless_name_that_resolves_to_a_metadata_address_is_refused_when_sending() -> None:
    with pytest.raises(WebhookUrlError) as refused:
        check_resolved("hooks.example.com", ["93.184.215.14", "169.254.169.254"], POLICY, port=443)
    assert str(refused.value) == (
        "webhook URL host hooks.example.com resolves to 169.254.169.254, which is a link-local address "
        "(169.254.0.0/16, fe80::/10), where cloud metadata answers; "
        "set CORTADO_WEBHOOK_ALLOW_HOSTS=hooks.example.com to allow it"
    )
    with pytest.raises(WebhookUrlError, match="resolves to fe80::1, which is a link-local address"):
        check_resolved("hooks.example.com", ["fe80::1%2"], POLICY)
    with pytest.raises(WebhookUrlError, match="resolves to fd00:ec2::254, which is a cloud metadata address"):
        check_resolved("hooks.example.com", ["fd00:ec2::254"], POLICY)
    with pytest.raises(WebhookUrlError) as refused:
        check_resolved("hooks.example.com", ["127.0.0.1"], POLICY, port=4222)
    assert str(refused.value) == (
        "webhook URL host hooks.example.com resolves to 127.0.0.1, which is a loopback address on port 4222, "
        "a port of the mesh itself; set CORTADO_WEBHOOK_ALLOW_HOSTS=hooks.example.com:4222 to allow it"
    )


def test_resolved_addresses_pass_when_harmless_or_allowed() -> None:
    check_resolved("hooks.example.com", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"], POLICY, port=443)
    check_resolved("hooks.example.com", ["127.0.0.1"], POLICY, port=8080)
    check_resolved("hooks.example.com", ["169.254.169.254"], UrlPolicy.of(["hooks.example.com"]), port=80)
    check_resolved("hooks.example.com", ["169.254.169.254"], UrlPolicy.of(["169.254.169.254"]), port=80)
    check_resolved("hooks.example.com", ["127.0.0.1"], UrlPolicy.of(["hooks.example.com:4222"]), port=4222)


# Back-off


def test_retry_delays_stay_within_half_to_all_of_a_doubling_ceiling() -> None:
    rng = random.Random(7)
    for attempts in range(1, 40):
        ceiling = min(3600.0, 2.0 ** (attempts - 1))
        for _ in range(50):
            assert ceiling / 2 <= webhooks.retry_delay(attempts, rng) <= ceiling


def test_retry_delays_start_near_one_second_and_are_capped_at_an_hour() -> None:
    assert 0.5 <= webhooks.retry_delay(1) <= 1.0
    assert 0.5 <= webhooks.retry_delay(0) <= 1.0
    assert 1800 <= webhooks.retry_delay(10_000) <= 3600
    assert 0.005 <= webhooks.retry_delay(1, first=0.01) <= 0.01
    assert 0.025 <= webhooks.retry_delay(4, first=0.01, cap=0.05) <= 0.05


def test_retry_delays_are_jittered_and_reproducible_with_a_seeded_rng() -> None:
    delays = [webhooks.retry_delay(12, random.Random(seed)) for seed in range(20)]
    assert len(set(delays)) > 1
    assert webhooks.retry_delay(12, random.Random(3)) == webhooks.retry_delay(12, random.Random(3))


# Delivery state


def _delivery() -> records_pb2.WebhookDelivery:
    return records_pb2.WebhookDelivery(url="https://example.com/", state=records_pb2.WEBHOOK_STATE_PENDING)


def test_attempts_are_counted_and_timed_and_a_success_clears_the_error() -> None:
    delivery = _delivery()
    failed = webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.FAILED, 100.0, "HTTP 500: oops"), 60)
    assert failed == webhooks.FAILED
    assert (delivery.state, delivery.attempts) == (records_pb2.WEBHOOK_STATE_PENDING, 1)
    assert delivery.last_error == "HTTP 500: oops"
    assert delivery.first_attempt_at.seconds == delivery.last_attempt_at.seconds == 100
    delivered = webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.DELIVERED, 130.5), 60)
    assert delivered == webhooks.DELIVERED
    assert (delivery.state, delivery.attempts, delivery.last_error) == (records_pb2.WEBHOOK_STATE_DELIVERED, 2, "")
    assert (delivery.first_attempt_at.seconds, delivery.last_attempt_at.ToNanoseconds()) == (100, 130_500_000_000)


def test_a_failure_past_the_retry_period_gives_up_and_410_or_a_refusal_stops() -> None:
    delivery = _delivery()
    webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.FAILED, 100.0, "HTTP 503"), 60)
    assert webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.FAILED, 160.0, "HTTP 503"), 60) == "failed"
    assert webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.FAILED, 161.0, "HTTP 502"), 60) == "gave_up"
    assert (delivery.state, delivery.attempts) == (records_pb2.WEBHOOK_STATE_GAVE_UP, 3)
    assert delivery.last_error == "HTTP 502"

    gone = _delivery()
    assert webhooks.apply_attempt(gone, webhooks.Attempt(webhooks.GONE, 1.0, "HTTP 410"), 60) == "gone"
    assert (gone.state, gone.attempts) == (records_pb2.WEBHOOK_STATE_STOPPED, 1)

    refused = _delivery()
    assert webhooks.apply_attempt(refused, webhooks.Attempt(webhooks.REFUSED, 1.0, "no"), 60) == "refused"
    assert (refused.state, refused.attempts, refused.last_error) == (records_pb2.WEBHOOK_STATE_STOPPED, 0, "no")


def test_a_finished_delivery_is_never_changed_by_a_late_attempt() -> None:
    delivery = _delivery()
    webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.DELIVERED, 1.0), 60)
    before = delivery.SerializeToString()
    assert webhooks.apply_attempt(delivery, webhooks.Attempt(webhooks.FAILED, 2.0, "HTTP 500"), 60) is None
    assert delivery.SerializeToString() == before


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3600", 3600.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5s", 1.5), ("never", None), ("", None), (None, None)],
)
def test_ttl_headers_are_read_as_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_ttl(header) == seconds
