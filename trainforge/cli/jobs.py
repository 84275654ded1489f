"""``trainforge jobs …``: submit, watch and fetch jobs through the REST API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trainforge.cli import progress
from trainforge.client import ApiError, Client, JobFailed
from trainforge.errors import SpecError
from trainforge.spec import load_spec_file
from trainforge.states import JobState

app = typer.Typer(help="Submit, watch and fetch fine-tuning jobs.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
MAP_KEY = progress.MAP_KEY


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _client() -> Client:
    return Client()


def _best_map(job: dict[str, Any]) -> str:
    value = job.get("metrics", {}).get(MAP_KEY)
    if value is None and job.get("trials"):
        values = [t["metrics"].get(MAP_KEY) for t in job["trials"]]
        value = max((v for v in values if v is not None), default=None)
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _watch(client: Client, job_id: str) -> None:
    """The progress bar until the job ends; Ctrl-C stops watching (exit 130), not the job.

    Raises:
        JobFailed: the job ended FAILED or CANCELLED.
        ApiError: the API refused or could not be reached.
    """
    try:
        final = progress.watch(client, job_id, console)
    except progress.StoppedWatching as stopped:
        console.print(stopped.message, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"{final['id']} {final['state']}  mAP50-95 {_best_map(final)}",
                  highlight=False)


@app.command()
def submit(
    spec_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="job spec YAML/JSON"),
    wait: bool = typer.Option(False, "--wait", help="watch progress (as `jobs wait`); exit 1 if "
                              "the job fails, 130 on Ctrl-C (the job goes on)"),
    idempotency_key: str | None = typer.Option(
        None, help="resubmitting with the same key returns the first job"
    ),
) -> None:
    """Submit SPEC_FILE (checked locally first), print the job id."""
    try:
        spec = load_spec_file(spec_file)
    except SpecError as exc:
        raise _fail(str(exc), 2) from None
    with _client() as client:
        try:
            job = client.submit(spec, idempotency_key=idempotency_key)
            console.print(f"submitted {job['id']} ({job['kind']} {job['name']}): {job['state']}",
                          highlight=False)
            if wait:
                _watch(client, job["id"])
        except JobFailed as exc:
            raise _fail(str(exc)) from None
        except ApiError as exc:
            for error in exc.errors:
                console.print(f"  {error['path']}: {error['message']}", highlight=False)
            raise _fail(str(exc)) from None


@app.command()
def resume(
    job_id: str,
    epochs: int | None = typer.Option(
        None, min=1, help="the new total of epochs, at least the epochs it trained (default: "
                          "the epochs it asked for); raising it trains that many more"),
    wait: bool = typer.Option(False, "--wait", help="watch progress (as `jobs wait`); exit 1 if "
                              "the job fails, 130 on Ctrl-C (the job goes on)"),
) -> None:
    """Continue a cancelled or failed training job from its last checkpoint, as a new job
    (printed; its resumed_from is JOB_ID). docs/training.md says what carries over."""
    with _client() as client:
        try:
            job = client.resume(job_id, epochs=epochs)
            reached = job.get("progress") or {}
            start = (f", continuing after epoch {reached['epoch']} of {reached['epochs']}"
                     if reached else "")
            console.print(f"resumed {job_id} as {job['id']} ({job['kind']} {job['name']}): "
                          f"{job['state']}{start}", highlight=False)
            if wait:
                _watch(client, job["id"])
        except (JobFailed, ApiError) as exc:
            raise _fail(str(exc)) from None


@app.command("wait")
def wait_for(job_id: str) -> None:
    """Watch a job's progress bar until it ends (again, after Ctrl-C stopped watching it).

    Exit 0 when it succeeds, 1 when it fails or is cancelled, 130 on Ctrl-C (the job goes on).
    """
    with _client() as client:
        try:
            _watch(client, job_id)
        except (JobFailed, ApiError) as exc:
            raise _fail(str(exc)) from None


@app.command("list")
def list_jobs(
    state: list[str] = typer.Option([], "--state",
                                    help="QUEUED, RUNNING, … (any case, repeatable)"),
    kind: str | None = typer.Option(None, help="train, sweep or export"),
    limit: int = typer.Option(50, min=1, help="most jobs to show"),
) -> None:
    """List your team's jobs, newest first."""
    try:
        states = [JobState(s).value for s in state]  # any case: the API accepts it too
    except ValueError as exc:
        raise _fail(f"--state: {exc}; use {', '.join(JobState)} (any case)", 2) from None
    print(f"{'ID':<28} {'STATE':<10} {'KIND':<6} {'NAME':<24} {'CREATED':<19} "
          f"{'EPOCH':<9} MAP50-95")
    with _client() as client:
        try:
            for n, job in enumerate(client.list_jobs(state=states or None, kind=kind)):
                if n >= limit:
                    break
                reached = job.get("progress") or {}
                epoch = f"{reached['epoch']}/{reached['epochs']}" if reached else "-"
                print(f"{job['id']:<28} {job['state']:<10} {job['kind']:<6} {job['name']:<24} "
                      f"{job['created_at'][:19]:<19} {epoch:<9} {_best_map(job)}")
        except ApiError as exc:
            raise _fail(str(exc)) from None


@app.command()
def get(job_id: str) -> None:
    """Print a job as JSON."""
    with _client() as client:
        try:
            print(json.dumps(client.get(job_id), indent=2))
        except ApiError as exc:
            raise _fail(str(exc)) from None


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job. A queued one is CANCELLED at once. A launched one is CANCELLING until
    its run has stopped: the dispatcher sends the run one SIGTERM (`trainforge serve` at
    once; another dispatcher on its next loop), the job stops training, shuts its Ray work
    down and ships its log, which ends with the step it was stopped in; SIGKILL follows if it
    has not exited 10 s later. On `trainforge serve` that takes a second or two. What the job
    wrote (checkpoints, logs) stays; a model it had not yet published is not. On a cluster
    the Ray job (Ray Jobs API) or the RayJob (KubeRay) is stopped instead."""
    with _client() as client:
        try:
            job = client.cancel(job_id)
        except ApiError as exc:
            raise _fail(str(exc)) from None
    console.print(f"{job['id']}: {job['state']}", highlight=False)


@app.command()
def logs(
    job_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends"),
    attempt: int | None = typer.Option(None, min=1, help="default: the latest attempt"),
) -> None:
    """Print a job's log."""
    with _client() as client:
        try:
            if follow:
                for chunk in client.follow_logs(job_id, attempt=attempt):
                    print(chunk, end="", flush=True)
            else:
                print(client.logs(job_id, attempt=attempt), end="")
        except ApiError as exc:
            raise _fail(str(exc)) from None


@app.command()
def events(
    job_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends"),
) -> None:
    """Print a job's events, one per line."""
    with _client() as client:
        try:
            stream = client.stream_events(job_id) if follow else client.events(job_id)
            for event in stream:
                if event["type"] == "state":
                    what = f"{event['from_state'] or '-'} -> {event['to_state']}"
                elif event["type"] == "progress":
                    data = event["data"]
                    what = f"epoch {data['epoch']}/{data['epochs']}" + (
                        f" trial {event['trial']}" if event.get("trial") else "")
                else:
                    what = ""
                print(f"{event['time'][:19]} {event['type']:<8} {what}  {event['reason']}")
        except ApiError as exc:
            raise _fail(str(exc)) from None


@app.command()
def artifacts(
    job_id: str,
    download: Path | None = typer.Option(None, "--download", help="download all into DIR"),
) -> None:
    """List a job's artifacts (name, size, sha256), or download them all.

    Until the job has succeeded they are not complete (what it wrote so far): a note on
    stderr says so.
    """
    with _client() as client:
        try:
            listing = client.artifact_list(job_id)
            if not listing["complete"]:
                _note_incomplete(client.get(job_id))
            if download is not None:
                for path in client.download(job_id, download):
                    print(path)
                return
            for item in listing["items"]:
                print(f"{item['name']:<40} {item['size']:>12}  {item['sha256']}")
        except ApiError as exc:
            raise _fail(str(exc)) from None


def _note_incomplete(job: dict[str, Any]) -> None:
    state = job["state"]
    if state in ("FAILED", "CANCELLED"):
        why = "what it wrote before it stopped; nothing more will come"
    elif state == "SUCCEEDED":
        why = "its run is still exiting; list again in a few seconds"
    else:
        why = "it has not finished; outputs are missing or partial"
    err_console.print(f"note: job {job['id']} is {state}: its artifacts are not complete "
                      f"({why})", highlight=False, soft_wrap=True)
