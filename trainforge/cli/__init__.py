"""The ``trainforge`` command line (typer). Sub-commands live one module each."""

from __future__ import annotations

import typer

from trainforge.cli import dataset, db, jobs, models, schedules, serve, tokens

app = typer.Typer(
    name="trainforge",
    help="Fine-tune Ultralytics YOLO detectors as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dataset.app, name="dataset")
app.add_typer(jobs.app, name="jobs")
app.add_typer(schedules.app, name="schedules")
app.add_typer(tokens.app, name="tokens")
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.command()(serve.serve)


@app.command()
def spec_schema() -> None:
    """Print the job-spec JSON Schema."""
    from trainforge.spec import json_schema_text

    print(json_schema_text(), end="")


def main() -> None:
    app()
