"""Webhook deliveries against a real HTTP receiver on loopback, on both job stores.

Signatures are checked with an independent implementation (the ``standardwebhooks`` package);
the receiver de-duplicates by ``webhook-id`` as docs/api.md tells receivers to. The crash tests
kill real processes (a relay, the API) between an event and its delivery.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from services.dispatcher.build import make_dispatcher
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.webhook_relay import RelayConfig, RetryPolicy, WebhookRelay
from services.store import Database, creation, dispatch, events, outbox, tokens
from services.store import schedules as schedule_repo
from services.store.domain import NewJob, NewSchedule, RunOutcome
from services.store.ids import new_job_id, new_schedule_id
from services.store.schedules import RunRecord
from services.store.tables import WebhookEventRow
from services.webhooks.destinations import DestinationPolicy
from tests.fixtures.network import free_port
from trainforge import aliases, lifecycle, registry
from trainforge.access import team_models_uri
from trainforge.spec import JobKind

ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """An HTTP server on loopback: records every request, answers with ``answer(path, n)``
    (n: the how-many-th request to that path) and accepts each ``webhook-id`` once."""

    def __init__(self, answer: Callable[[str, int], int]) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                    n = sum(1 for p, _, _ in receiver.requests if p == self.path)
                    status = answer(self.path, n)
                    if 200 <= status < 300:  # de-duplicate by webhook-id, as receivers should
                        receiver.accepted.setdefault(self.headers["webhook-id"],
                                                     json.loads(body))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def types(self) -> list[str]:
        return sorted(str(b["type"]) for b in self.accepted.values())


@pytest.fixture()
def receiver() -> Iterator[Callable[[Callable[[str, int], int]], Receiver]]:
    started: list[Receiver] = []

    def start(answer: Callable[[str, int], int] = lambda path, n: 200) -> Receiver:
        started.append(Receiver(answer))
        return started[-1]

    yield start
    for one in started:
        one.close()


def _relay(db: Database, api_server: Any, **overrides: Any) -> WebhookRelay:
    clock = overrides.pop("clock", None)
    values: dict[str, Any] = {
        "models_uri": api_server.settings.resolved_models_uri,
        "secret_key": api_server.settings.secret_key_bytes(),
        "destinations": DestinationPolicy.parse([], embedded=True),
        "owner": f"test-{uuid.uuid4().hex[:8]}",
        "retry": RetryPolicy(base_s=0.01, max_delay_s=0.02, max_attempts=6, jitter=0),
        "timeout_s": 2.0,
        "concurrency": 4,
    }
    values.update(overrides)
    return WebhookRelay(db, RelayConfig(**values), **({"clock": clock} if clock else {}))


def _drive(relay: WebhookRelay, done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the relay did not get there in time"
        relay.run_once()
        time.sleep(0.02)


def _subscribe(api_server: Any, headers: dict[str, str], url: str,
               events: list[str]) -> dict[str, Any]:
    response = httpx.post(f"{api_server.url}/v1/webhooks",
                          json={"url": url, "events": events}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _deliveries(api_server: Any, headers: dict[str, str], webhook_id: str
                ) -> list[dict[str, Any]]:
    response = httpx.get(f"{api_server.url}/v1/webhooks/{webhook_id}/deliveries",
                         headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _job(db: Database, team: str = "vision", name: str = "ppe") -> str:
    job_id = new_job_id()
    with db.transaction() as session:
        creation.insert_job(session, NewJob(id=job_id, team=team, kind=JobKind.TRAIN, name=name,
                                        spec_uri="file:///nowhere/spec.json", spec_sha256="",
                                        gpus=0, max_attempts=1))
    return job_id


def _cancel(db: Database, job_id: str, team: str = "vision") -> None:
    with db.transaction() as session:
        events.request_cancel(session, job_id, team=team, reason="test")


def _succeed(db: Database) -> None:
    """Claim every queued job and settle its attempt as succeeded (what a dispatcher does)."""
    with db.transaction() as session:
        claimed = dispatch.claim(session, owner="test", backend="test", limit=100,
                                 token_sha256=lambda job_id, n: "0" * 64)
    for assignment in claimed:
        with db.transaction() as session:
            dispatch.settle(session, assignment.job.id, assignment.attempt.number,
                            succeeded=True, message="exited 0", retry_delay=timedelta(0))


def test_deliveries_are_signed_the_standard_webhooks_way(
        db: Database, api_server: Any, team_headers: dict[str, str],
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    hook = _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["job.cancelled"])
    job_id = _job(db)
    _cancel(db, job_id)
    _drive(_relay(db, api_server), lambda: len(hooks.accepted) == 1)
    [(path, headers, body)] = hooks.requests
    verified = Webhook(hook["secret"]).verify(body, headers)
    assert verified["id"] == headers["webhook-id"] and verified["type"] == "job.cancelled"
    assert verified["team"] == "vision" and verified["data"]["id"] == job_id
    assert verified["data"]["state"] == "CANCELLED"
    assert datetime.fromisoformat(verified["time"]).tzinfo is not None
    [delivery] = _deliveries(api_server, team_headers, hook["id"])
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered", 1, 200)
    assert delivery["event_id"] == verified["id"]


def test_a_receiver_that_fails_three_times_ends_with_one_accepted_delivery(
        db: Database, api_server: Any, team_headers: dict[str, str],
        receiver: Callable[..., Receiver]) -> None:
    statuses = {1: 500, 2: 302, 3: 503}  # a redirect is a failure too: it is not followed
    hooks = receiver(lambda path, n: statuses.get(n, 200))
    hook = _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["job.cancelled"])
    _cancel(db, _job(db))
    relay = _relay(db, api_server)
    _drive(relay, lambda: len(hooks.accepted) == 1)
    for _ in range(3):
        relay.run_once()  # nothing more is sent once it was accepted
    assert [p for p, _, _ in hooks.requests] == ["/hook"] * 4  # /redirected never called
    assert len({h["webhook-id"] for _, h, _ in hooks.requests}) == 1
    assert len(hooks.accepted) == 1
    [delivery] = _deliveries(api_server, team_headers, hook["id"])
    assert (delivery["state"], delivery["attempts"], delivery["last_status"],
            delivery["last_error"]) == ("delivered", 4, 200, None)


def test_model_events_come_from_a_finished_jobs_registry_records_for_its_team_only(
        db: Database, api_server: Any, team_headers: dict[str, str], tmp_path: Path,
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    events = ["job.succeeded", "model.published", "model.promoted", "model.kept",
              "alias.moved"]
    hook = _subscribe(api_server, team_headers, f"{hooks.url}/vision", events)
    with db.transaction() as session:
        retail = tokens.create_token(session, "retail")[1]
    _subscribe(api_server, {"Authorization": f"Bearer {retail}"}, f"{hooks.url}/retail",
               events)
    job_id = _job(db)
    root = team_models_uri(api_server.settings.resolved_models_uri, "vision")
    (tmp_path / "best.pt").write_bytes(b"weights")
    registry.publish(root, "ppe", job_id, {"best.pt": tmp_path / "best.pt"},
                     {"source_job_id": job_id})
    move = aliases.move(root, "ppe", "champion", job_id, actor=f"job {job_id}",
                        reason="first version", expected=None)
    lifecycle.keep_decision(root, {"model": "ppe", "version": job_id, "alias": "champion",
                                   "champion": None, "outcome": "promoted",
                                   "summary": "first version",
                                   "decided_at": datetime.now(UTC).isoformat()})
    _succeed(db)
    relay = _relay(db, api_server)
    _drive(relay, lambda: len(hooks.accepted) == 4)
    relay.run_once()
    assert hooks.types() == ["alias.moved", "job.succeeded", "model.promoted",
                             "model.published"]
    assert {p for p, _, _ in hooks.requests} == {"/vision"}  # retail hears nothing of vision
    by_type = {b["type"]: b["data"] for b in hooks.accepted.values()}
    assert by_type["model.published"]["version"] == job_id
    assert by_type["model.published"]["artifacts"] == ["best.pt"]
    assert by_type["model.promoted"]["alias"] == "champion"
    assert by_type["alias.moved"]["seq"] == move.seq == 1
    assert len(_deliveries(api_server, team_headers, hook["id"])) == 4


def test_a_failed_schedule_run_is_an_event(
        db: Database, api_server: Any, team_headers: dict[str, str],
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["schedule.run_failed"])
    with db.transaction() as session:
        schedule = schedule_repo.insert_schedule(session, NewSchedule(
            id=new_schedule_id(), team="vision", name="nightly", cron="0 3 * * *",
            timezone="UTC", spec={}, only_if_dataset_changed=True, paused=False),
            max_schedules=1)
        schedule_repo.record_run(session, schedule, RunRecord(
            fire_time=schedule.next_fire_at, outcome=RunOutcome.FAILED,
            message="no job submitted: dataset unreadable",
            next_fire_at=schedule.next_fire_at + timedelta(days=1)))
    _drive(_relay(db, api_server), lambda: len(hooks.accepted) == 1)
    [body] = hooks.accepted.values()
    assert body["type"] == "schedule.run_failed"
    assert body["data"]["schedule"]["id"] == schedule.id
    assert "dataset unreadable" in body["data"]["run"]["message"]


def test_a_subscription_that_keeps_failing_is_disabled_with_an_event(
        db: Database, api_server: Any, team_headers: dict[str, str],
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver(lambda path, n: 500 if path == "/bad" else 200)
    bad = _subscribe(api_server, team_headers, f"{hooks.url}/bad", ["job.cancelled"])
    _subscribe(api_server, team_headers, f"{hooks.url}/good", ["webhook.disabled"])
    first = _job(db)
    _cancel(db, first)
    relay = _relay(db, api_server, retry=RetryPolicy(base_s=0.01, max_delay_s=0.01,
                                                      max_attempts=3, jitter=0))
    _drive(relay, lambda: len(hooks.accepted) == 1)
    assert sum(1 for p, _, _ in hooks.requests if p == "/bad") == 3
    [disabled] = hooks.accepted.values()
    assert disabled["type"] == "webhook.disabled"
    assert disabled["data"]["webhook"]["id"] == bad["id"]
    listed = {w["id"]: w for w in httpx.get(f"{api_server.url}/v1/webhooks",
                                            headers=team_headers).json()["items"]}
    assert listed[bad["id"]]["enabled"] is False
    assert "failed 3 attempts" in listed[bad["id"]]["disabled_reason"]
    _cancel(db, _job(db))  # a disabled subscription gets nothing more
    for _ in range(3):
        relay.run_once()
    assert sum(1 for p, _, _ in hooks.requests if p == "/bad") == 3
    [delivery] = _deliveries(api_server, team_headers, bad["id"])
    assert (delivery["state"], delivery["attempts"]) == ("failed", 3)


def test_replicas_never_claim_the_same_delivery(
        db: Database, api_server: Any, team_headers: dict[str, str],
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["job.cancelled"])
    for _ in range(12):
        _cancel(db, _job(db))
    relays = [_relay(db, api_server, concurrency=2) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(hooks.accepted) < 12:
        assert time.monotonic() < deadline
        threads = [threading.Thread(target=r.run_once) for r in relays]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(hooks.requests) == 12  # each event sent once, by one of the two


def _relay_env(database_url: str, api_server: Any, home: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
    return {
        **env,
        "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
        "TRAINFORGE_HOME": str(home),
        "TRAINFORGE_EMBEDDED": "true",
        "TRAINFORGE_DATABASE_URL": database_url,
        "TRAINFORGE_SECRET_KEY": api_server.settings.secret_key.get_secret_value(),
        "TRAINFORGE_MODELS_URI": api_server.settings.resolved_models_uri,
        "TRAINFORGE_ARTIFACTS_URI": api_server.settings.resolved_artifacts_uri,
        "TRAINFORGE_MIGRATE_ON_STARTUP": "false",
    }


@pytest.mark.slow  # a real process, killed
@pytest.mark.parametrize("point", ["webhook_claimed", "webhook_sent"])
def test_a_relay_killed_between_event_and_delivery_loses_nothing(
        point: str, db: Database, database_url: str, api_server: Any,
        team_headers: dict[str, str], tmp_path: Path,
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    hook = _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["job.cancelled"])
    _cancel(db, _job(db))
    killed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("killed_relay.py")), point],
        env=_relay_env(database_url, api_server, tmp_path), capture_output=True, text=True,
        timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert len(hooks.requests) == (1 if point == "webhook_sent" else 0)
    # A fresh relay once the dead one's lease has run out.
    later = _relay(db, api_server, clock=lambda: datetime.now(UTC) + timedelta(seconds=61))
    _drive(later, lambda: _deliveries(api_server, team_headers, hook["id"])[0]["state"]
           == "delivered")
    assert len(hooks.accepted) == 1  # sent again after a kill at webhook_sent: one webhook-id
    assert len({h["webhook-id"] for _, h, _ in hooks.requests}) == 1


@pytest.mark.slow  # a real process, killed
def test_an_api_killed_after_a_change_loses_nothing(
        db: Database, database_url: str, api_server: Any, tmp_path: Path,
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    with db.transaction() as session:
        token = tokens.create_token(session, "vision")[1]
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    env = {**_relay_env(database_url, api_server, tmp_path), "TRAINFORGE_API_PORT": str(port),
           "TRAINFORGE_API_HOST": "127.0.0.1", "TRAINFORGE_TOKEN_CACHE_S": "0",
           "TRAINFORGE_STORAGE_POLICY": '{"default": {"datasets": ["s3://datasets/"]}}'}
    process = subprocess.Popen([sys.executable, "-m", "services.api"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the API did not start"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        created = httpx.post(f"{url}/v1/webhooks", headers=headers, json={
            "url": f"{hooks.url}/hook", "events": ["job.cancelled"]})
        assert created.status_code == 201, created.text
        job = httpx.post(f"{url}/v1/jobs", headers=headers, json={"spec": {
            "name": "ppe", "dataset": {"uri": "s3://datasets/ppe/v3/"},
            "model": {"base": "yolov8n.yaml"}}})
        assert job.status_code == 201, job.text
        cancelled = httpx.post(f"{url}/v1/jobs/{job.json()['id']}/cancel", headers=headers)
        assert cancelled.status_code == 200
    finally:
        process.send_signal(signal.SIGKILL)  # the API dies right after the change
        process.wait(timeout=30)
    _drive(_relay(db, api_server), lambda: len(hooks.accepted) == 1)
    [body] = hooks.accepted.values()
    assert (body["type"], body["data"]["id"]) == ("job.cancelled", job.json()["id"])
    _, signed_headers, signed_body = hooks.requests[0]
    assert Webhook(created.json()["secret"]).verify(signed_body, signed_headers)["id"] == \
        signed_headers["webhook-id"]


def test_an_alias_move_whose_api_died_before_confirming_is_settled_from_the_alias_log(
        db: Database, api_server: Any, team_headers: dict[str, str], tmp_path: Path,
        receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["alias.moved"])
    root = team_models_uri(api_server.settings.resolved_models_uri, "vision")
    name = f"m{uuid.uuid4().hex[:8]}"  # the API's registry outlives each test
    (tmp_path / "best.pt").write_bytes(b"weights")
    for version in ("v1", "v2"):
        registry.publish(root, name, version, {"best.pt": tmp_path / "best.pt"}, {})

    def intent(record: aliases.AliasMove) -> None:  # what the API records before the write
        with db.transaction() as session:
            outbox.begin_alias_move(session, "vision", record.to_json())

    # An API that wrote the alias record and died before confirming its event...
    lifecycle.promote(root, name, "v1", "champion", actor="team vision (API)", reason="r",
                      before_write=intent)

    # ... and one that died after its intent, before the write.
    class Died(BaseException):
        pass

    def intent_then_die(record: aliases.AliasMove) -> None:
        intent(record)
        raise Died

    with pytest.raises(Died):
        lifecycle.promote(root, name, "v2", "staging", actor="team vision (API)",
                          reason="r", before_write=intent_then_die)
    relay = _relay(db, api_server, confirm_grace=timedelta(0))
    _drive(relay, lambda: len(hooks.accepted) == 1)
    relay.run_once()
    [body] = hooks.accepted.values()
    assert {k: body["data"][k] for k in ("model", "alias", "seq", "version")} == {
        "model": name, "alias": "champion", "seq": 1, "version": "v1"}
    with db.transaction() as session:
        states = [r.state for r in session.scalars(select(WebhookEventRow))]
    assert states == ["fanned"]  # the move that never happened left no event


def test_event_ids_are_the_same_whoever_records_them() -> None:
    assert outbox.event_id("vision", "alias.moved", "ppe/champion/3") == outbox.event_id(
        "vision", "alias.moved", "ppe/champion/3")
    assert outbox.event_id("vision", "alias.moved", "ppe/champion/3") != outbox.event_id(
        "retail", "alias.moved", "ppe/champion/3")
    assert len(outbox.event_id("t", "job.failed", "j1")) == 36


def test_a_running_dispatcher_relays_beside_its_loop(
        db: Database, database_url: str, api_server: Any, team_headers: dict[str, str],
        tmp_path: Path, receiver: Callable[..., Receiver]) -> None:
    hooks = receiver()
    _subscribe(api_server, team_headers, f"{hooks.url}/hook", ["job.cancelled"])
    settings = DispatcherSettings(
        home=tmp_path, embedded=True, database_url=database_url,
        secret_key=api_server.settings.secret_key.get_secret_value(),
        models_uri=api_server.settings.resolved_models_uri, migrate_on_startup=False,
        dispatcher_poll_interval_s=0.5, webhook_poll_interval_s=0.05)
    dispatcher = make_dispatcher(settings, db)
    # Cancelled while still queued, before the loop starts: a loop already running could claim
    # the job first, and its launch (there is no spec) would hold the cancel up.
    _cancel(db, _job(db))
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not hooks.accepted:
            assert time.monotonic() < deadline, "the dispatcher's relay delivered nothing"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert hooks.types() == ["job.cancelled"]
