"""Text that would forge log lines or reorder what a page shows is refused where a team sends
it, with the position of the first offending character, and made visible where trainforge
only relays it (a job's event reasons quote file names of the team's dataset).

The attack: ``dataset.uri`` accepted U+2028 (a line break to many log and JSON-lines readers)
and bidirectional overrides (U+202A-U+202E, U+2066-U+2069), so a URI could read as
``s3://datasets/vision/`` on the dashboard while naming another prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.store import Database
from tests.fixtures.api import SPEC, claim_all, submit

#: A separator, an override, an isolate and a mark: each kind the check names.
SPOOFERS = ["\u2028", "\u2029", "\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\x85"]


def _bodies(c: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every user string that reaches a log, an event or the dashboard: (method, path, body),
    with ``c`` placed inside the string under test."""
    spec = {**SPEC, "dataset": {"uri": "s3://datasets/ppe/v3/"}}
    sweep = {**spec, "kind": "sweep",
             "sweep": {"trials": 2, "space": {"optimizer": {"choice": ["SGD", f"Ad{c}am"]}}}}
    return {
        "spec.dataset.uri": ("POST", "/v1/jobs",
                             {"spec": {**spec, "dataset": {"uri": f"s3://datasets/pp{c}e/v3/"}}}),
        "spec.model.base": ("POST", "/v1/jobs",
                            {"spec": {**spec, "model": {"base": f"s3://models/p{c}pe/best.pt"}}}),
        "spec.sweep.space.optimizer.choice.1": ("POST", "/v1/jobs", {"spec": sweep}),
        "cron": ("POST", "/v1/schedules", {"spec": spec, "cron": f"0 3 * * *{c}"}),
        "timezone": ("POST", "/v1/schedules",
                     {"spec": spec, "cron": "0 3 * * *", "timezone": f"Europe/Ber{c}lin"}),
        "url": ("POST", "/v1/webhooks", {"url": f"https://hooks.example.com/{c}x",
                                         "events": ["job.succeeded"]}),
        "description": ("POST", "/v1/webhooks", {"url": "https://hooks.example.com/x",
                                                 "events": ["job.succeeded"],
                                                 "description": f"deploy{c}er"}),
        "reason": ("POST", "/v1/models/ppe/aliases/champion",
                   {"version": "j01", "reason": f"better{c} mAP"}),
        "uri": ("POST", "/v1/datasets/validate", {"uri": f"s3://datasets/p{c}pe/"}),
    }


@pytest.mark.parametrize("char", SPOOFERS, ids=lambda c: f"U+{ord(c):04X}")
def test_spoofing_characters_are_refused_with_their_position(
    client: TestClient, auth: dict[str, str], char: str,
) -> None:
    for field, (method, path, body) in _bodies(char).items():
        answer = client.request(method, path, json=body, headers=auth)
        assert answer.status_code == 422, (field, answer.status_code, answer.text)
        text = answer.json()["detail"]
        assert f"U+{ord(char):04X}" in text, (field, text)
        assert "character " in text and " is U+" in text, (field, text)
        assert char not in answer.text, f"{field}: the refusal echoes the character"


def test_the_position_counts_characters_from_one(client: TestClient,
                                                  auth: dict[str, str]) -> None:
    uri = "s3://datasets/vision/\u202e/retail/"
    answer = client.post("/v1/jobs", json={"spec": {**SPEC, "dataset": {"uri": uri}}},
                         headers=auth)
    assert answer.status_code == 422
    message = answer.json()["errors"][0]["message"]
    assert message.startswith("Value error, character 22 is U+202E (RIGHT-TO-LEFT OVERRIDE), "
                              "a bidirectional control"), message


def test_relayed_text_is_shown_not_obeyed(
    client: TestClient, auth: dict[str, str], db: Database, make_token: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job quotes its dataset's file names in its events: the reason is stored and logged
    with the characters made visible, and the dashboard shows the same."""
    job = submit(client, auth)
    token = claim_all(db)[job["id"]]
    reason = "bad label in train/labels/\u202egnp.txt\u2028FAILED: nothing\x1b[2J"
    caplog.set_level(logging.INFO, logger="services.store.events")
    posted = client.post(f"/internal/v1/jobs/{job['id']}/events",
                         json={"type": "state", "state": "RUNNING", "reason": reason},
                         headers={"Authorization": f"Bearer {token}"})
    assert posted.status_code == 202, posted.text
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["items"]
    shown = next(e["reason"] for e in events if e["to_state"] == "RUNNING")
    assert shown == ("bad label in train/labels/<U+202E>gnp.txt<U+2028>FAILED: "
                     "nothing<U+001B>[2J")
    logged = [r.getMessage() for r in caplog.records if "-> RUNNING" in r.getMessage()]
    assert logged and all(c not in line for line in logged for c in "\u202e\u2028\x1b\n")
    client.post("/ui/login", data={"token": auth["Authorization"].split()[1]},
                headers={"Origin": "http://testserver"})
    page = client.get(f"/ui/jobs/{job['id']}")
    assert page.status_code == 200
    assert "\u202e" not in page.text and "&lt;U+202E&gt;gnp.txt" in page.text
