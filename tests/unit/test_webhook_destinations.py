"""Where a webhook may point (services/webhooks/destinations.py), its signature, and the retry
schedule: the rules that need no database."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from services.dispatcher.webhook_relay import RetryPolicy
from services.webhooks import secrets
from services.webhooks.destinations import DestinationPolicy
from trainforge.errors import WebhookDestinationRefused
from trainforge.webhooks import new_secret, signature

PRODUCTION = DestinationPolicy.parse([], embedded=False)
EMBEDDED = DestinationPolicy.parse([], embedded=True)


@pytest.mark.parametrize(("policy", "url", "why"), [
    (PRODUCTION, "http://hooks.example.com/x", "https"),
    (EMBEDDED, "http://hooks.example.com/x", "https"),
    (PRODUCTION, "http://127.0.0.1:9000/x", "https"),
    (PRODUCTION, "https://user:pw@hooks.example.com/x", "user name"),
    (PRODUCTION, "ftp://hooks.example.com/x", "https"),
    (PRODUCTION, "https://169.254.169.254/latest/meta-data/", "metadata"),
    (PRODUCTION, "https://[fd00:ec2::254]/", "metadata"),
    (PRODUCTION, "https://100.100.100.200/", "metadata"),
    (PRODUCTION, "https://10.1.2.3/hook", "private"),
    (PRODUCTION, "https://192.168.0.10/hook", "private"),
    (PRODUCTION, "https://169.254.10.1/hook", "link-local"),
    (PRODUCTION, "https://[::ffff:10.0.0.1]/hook", "private"),
    (PRODUCTION, "https://127.0.0.1/hook", "loopback"),
    (PRODUCTION, "https://0.0.0.0/hook", "not an address"),
    (PRODUCTION, "https://hooks.example.com/a b", "printable"),
])
def test_refused_urls_say_why(policy: DestinationPolicy, url: str, why: str) -> None:
    with pytest.raises(WebhookDestinationRefused, match=why):
        policy.check_url(url)


def test_http_reaches_loopback_only_in_embedded_mode() -> None:
    assert EMBEDDED.check_url("http://127.0.0.1:9000/hook").port == 9000
    assert EMBEDDED.check_url("http://localhost:9000/hook").host == "localhost"
    with pytest.raises(WebhookDestinationRefused):
        PRODUCTION.check_url("http://localhost:9000/hook")


def test_allowed_hosts_restrict_names_and_admit_listed_networks() -> None:
    policy = DestinationPolicy.parse(
        ["hooks.example.com", "*.corp.example", "10.20.0.0/16", "169.254.0.0/16"],
        embedded=False)
    policy.check_url("https://hooks.example.com/x")
    policy.check_url("https://ci.corp.example/x")
    policy.check_url("https://10.20.3.4/x")  # a listed network admits its private addresses
    with pytest.raises(WebhookDestinationRefused, match="not among"):
        policy.check_url("https://other.example.com/x")
    with pytest.raises(WebhookDestinationRefused, match="not among"):
        policy.check_url("https://10.21.0.1/x")
    # A listed range never opens the metadata endpoint inside it; listing it alone does.
    with pytest.raises(WebhookDestinationRefused, match="metadata"):
        policy.check_url("https://169.254.169.254/")
    DestinationPolicy.parse(["169.254.169.254/32"], embedded=False).check_url(
        "https://169.254.169.254/")


def test_every_resolved_address_is_checked() -> None:
    # localhost resolves to loopback addresses: refused outside embedded mode.
    destination = PRODUCTION.check_url("https://localhost:8443/hook")
    with pytest.raises(WebhookDestinationRefused, match="loopback"):
        PRODUCTION.resolve(destination)
    with pytest.raises(WebhookDestinationRefused, match="does not resolve"):
        PRODUCTION.resolve(PRODUCTION.check_url("https://no-such-host.invalid/hook"))


def test_unreadable_allowed_hosts_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="not a host name"):
        DestinationPolicy.parse(["https://hooks.example.com/"], embedded=False)


def test_signature_verifies_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    body = b'{"id":"evt_1","type":"job.succeeded"}'
    timestamp = int(time.time())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(secret, "evt_1", timestamp, body)}
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "job.succeeded"}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)


def test_sealed_secrets_open_only_with_their_key_and_row() -> None:
    sealed = secrets.seal(b"key-one", "w1", "whsec_abc")
    assert "whsec_abc" not in sealed
    assert secrets.unseal(b"key-one", "w1", sealed) == "whsec_abc"
    with pytest.raises(secrets.SecretUnreadable, match="TRAINFORGE_SECRET_KEY"):
        secrets.unseal(b"key-two", "w1", sealed)
    with pytest.raises(secrets.SecretUnreadable):
        secrets.unseal(b"key-one", "w2", sealed)  # copied onto another subscription's row


def test_the_default_schedule_retries_for_at_least_24_hours() -> None:
    policy = RetryPolicy()
    assert policy.shortest_span() >= timedelta(hours=24)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, policy.max_attempts + 1)]
    assert delays[-1] is None and all(d is not None for d in delays[:-1])
    waits = [d.total_seconds() for d in delays[:-1] if d is not None]
    assert waits[0] < 15 and max(waits) <= 3600 * 1.2
    assert all(a < b for a, b in zip(waits[:8], waits[1:9], strict=True))  # doubling
    assert sum(waits) >= 24 * 3600
