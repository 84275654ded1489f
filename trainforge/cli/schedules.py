"""``trainforge schedules …``: retrain on a cron schedule, optionally only on new data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from trainforge.cli.jobs import _client, _fail, console
from trainforge.client import ApiError, Client
from trainforge.errors import SpecError
from trainforge.spec import load_spec_file

app = typer.Typer(
    help="Re-submit a job spec on a cron schedule (skipping runs whose dataset is unchanged).",
    no_args_is_help=True,
)


@contextmanager
def _api() -> Iterator[Client]:
    """A client; an API error ends the command with its message (and field errors)."""
    with _client() as client:
        try:
            yield client
        except ApiError as exc:
            for error in exc.errors:
                console.print(f"  {error['path']}: {error['message']}", highlight=False)
            raise _fail(str(exc)) from None


def _when(value: str | None) -> str:
    return f"{value[:16].replace('T', ' ')} UTC" if value else "-"


def _summary(schedule: dict[str, Any]) -> str:
    state = "paused" if schedule["paused"] else f"next {_when(schedule['next_fire_at'])}"
    return (f"{schedule['id']} ({schedule['name']}): {schedule['cron']} "
            f"{schedule['timezone']}, {state}")


@app.command()
def create(
    spec_file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                     help="job spec YAML/JSON: the job template"),
    cron: str = typer.Option(..., help="5-field cron expression, e.g. '0 3 * * *'"),
    timezone: str = typer.Option("UTC", help="IANA time zone of the cron expression"),
    only_if_dataset_changed: bool = typer.Option(
        True, "--only-if-dataset-changed/--always",
        help="skip a fire time when the dataset is unchanged since the last submitted job",
    ),
    name: str | None = typer.Option(None, help="default: the spec's name"),
    paused: bool = typer.Option(False, "--paused", help="create it paused"),
) -> None:
    """Create a schedule from SPEC_FILE (checked locally first), print its id."""
    try:
        spec = load_spec_file(spec_file)
    except SpecError as exc:
        raise _fail(str(exc), 2) from None
    with _api() as client:
        schedule = client.create_schedule(
            spec, cron=cron, timezone=timezone, only_if_dataset_changed=only_if_dataset_changed,
            name=name, paused=paused,
        )
    print(f"created {_summary(schedule)}")


@app.command("list")
def list_schedules() -> None:
    """List your team's schedules, newest first."""
    print(f"{'ID':<28} {'NAME':<20} {'CRON':<16} {'TIMEZONE':<18} {'NEXT (UTC)':<17} "
          f"{'LAST':<10} ONLY-IF-CHANGED")
    with _api() as client:
        for s in client.list_schedules():
            next_fire = "paused" if s["paused"] else _when(s["next_fire_at"])[:16]
            print(f"{s['id']:<28} {s['name']:<20} {s['cron']:<16} {s['timezone']:<18} "
                  f"{next_fire:<17} {s['last_outcome'] or '-':<10} "
                  f"{'yes' if s['only_if_dataset_changed'] else 'no'}")


@app.command()
def show(schedule_id: str) -> None:
    """Print a schedule (with its next fire time and latest runs) as JSON."""
    with _api() as client:
        print(json.dumps(client.get_schedule(schedule_id), indent=2))


@app.command()
def pause(schedule_id: str) -> None:
    """Pause a schedule: it fires no more until resumed."""
    with _api() as client:
        print(_summary(client.pause_schedule(schedule_id)))


@app.command()
def resume(schedule_id: str) -> None:
    """Resume a schedule at its next cron time (times passed while paused do not run)."""
    with _api() as client:
        print(_summary(client.resume_schedule(schedule_id)))


@app.command()
def run(schedule_id: str) -> None:
    """Fire a schedule now (on the dispatcher's next loop; the dataset check still applies)."""
    with _api() as client:
        schedule = client.run_schedule(schedule_id)
    print(f"{schedule['id']}: due now; see `trainforge schedules runs {schedule['id']}`")


@app.command()
def delete(schedule_id: str) -> None:
    """Delete a schedule and its runs (the jobs it submitted stay)."""
    with _api() as client:
        client.delete_schedule(schedule_id)
    print(f"{schedule_id}: deleted")


@app.command()
def runs(
    schedule_id: str,
    limit: int = typer.Option(20, min=1, help="most runs to show"),
) -> None:
    """A schedule's runs, newest first: the job submitted, or why none was."""
    with _api() as client:
        for n, r in enumerate(client.schedule_runs(schedule_id)):
            if n >= limit:
                break
            print(f"{_when(r['fire_time']):<20} {r['outcome']:<9} {r['job_id'] or '-':<28} "
                  f"{r['message']}")
            if r.get("promotion"):
                print(f"{'':<20} {'':<9} {'':<28} {r['promotion']}")
