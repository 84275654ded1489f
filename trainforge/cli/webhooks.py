"""``trainforge webhooks …``: signed event deliveries to your tools (docs/api.md, Webhooks)."""

from __future__ import annotations

import typer

from trainforge.cli.schedules import _api, _when
from trainforge.webhooks import EventType

app = typer.Typer(
    help="Webhooks: POST your team's job, model and schedule events to a URL, signed.",
    no_args_is_help=True,
)


@app.command()
def create(
    url: str = typer.Argument(..., help="https URL to POST the events to"),
    event: list[EventType] = typer.Option(
        ..., "--event", "-e", help="an event type to send (repeat for several)"),
    description: str = typer.Option("", help="what it is for, for people"),
) -> None:
    """Subscribe URL to events; prints its id and signing secret (shown this once only)."""
    with _api() as client:
        webhook = client.create_webhook(url, [e.value for e in event], description=description)
    print(f"created {webhook['id']}: {', '.join(webhook['events'])} → {webhook['url']}")
    print(f"secret {webhook['secret']}")
    print("store the secret now: it is not shown again (verify each delivery with it, "
          "see docs/api.md)")


@app.command("list")
def list_webhooks() -> None:
    """List your team's webhooks, newest first."""
    print(f"{'ID':<28} {'STATE':<9} {'CREATED (UTC)':<20} {'URL':<40} EVENTS")
    with _api() as client:
        for w in client.list_webhooks():
            state = "enabled" if w["enabled"] else "disabled"
            print(f"{w['id']:<28} {state:<9} {_when(w['created_at']):<20} {w['url']:<40} "
                  f"{','.join(w['events'])}")
            if w["disabled_reason"]:
                print(f"{'':<28} {w['disabled_reason']}")


@app.command()
def delete(webhook_id: str) -> None:
    """Delete a webhook and its deliveries; nothing more is sent to it."""
    with _api() as client:
        client.delete_webhook(webhook_id)
    print(f"{webhook_id}: deleted")


@app.command()
def deliveries(
    webhook_id: str,
    limit: int = typer.Option(20, min=1, help="most deliveries to show"),
) -> None:
    """A webhook's deliveries, newest first: state, attempts and the receiver's last answer."""
    print(f"{'EVENT':<37} {'TYPE':<20} {'STATE':<10} {'TRIES':>5}  {'NEXT (UTC)':<20} LAST")
    with _api() as client:
        for n, d in enumerate(client.webhook_deliveries(webhook_id)):
            if n >= limit:
                break
            last = d["last_error"] or (f"HTTP {d['last_status']}" if d["last_status"] else "-")
            print(f"{d['event_id']:<37} {d['event_type']:<20} {d['state']:<10} "
                  f"{d['attempts']:>5}  {_when(d['next_attempt_at']):<20} {last}")
