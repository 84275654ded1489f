"""The ``trainforge`` command line (typer). Sub-commands live one module each."""

from __future__ import annotations

import os

import typer

from trainforge.cli import dataset, jobs, models, plugins, schedules, webhooks
from trainforge.private import restrict_umask

app = typer.Typer(
    name="trainforge",
    help="Fine-tune Ultralytics YOLO detectors as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _mount(name: str) -> None:
    """Add the services' command ``name`` (services/cli/, entry-point group ``trainforge.cli``)
    when this install has it: a group as a sub-app, a function as a command."""
    command = plugins.load(plugins.COMMANDS_GROUP, name)
    if isinstance(command, typer.Typer):
        app.add_typer(command, name=name)
    elif command is not None:
        app.command(name=name)(command)


# The order of registration is the order of `trainforge --help`.
app.add_typer(dataset.app, name="dataset")
app.add_typer(jobs.app, name="jobs")
app.add_typer(schedules.app, name="schedules")
_mount("tokens")
_mount("db")
app.add_typer(models.app, name="models")
app.add_typer(webhooks.app, name="webhooks")
_mount("serve")

#: Commands that create files under $TRAINFORGE_HOME (the job store, the embedded server's
#: state): they run with an owner-only umask (trainforge/private.py). The others write where
#: their user says (datasets, downloads) and keep the user's umask.
PRIVATE_COMMANDS = frozenset({"serve", "tokens", "db"})


@app.callback()
def _private_state(ctx: typer.Context) -> None:
    # No docstring: typer would show it as the command's help instead of the app's.
    if ctx.invoked_subcommand in PRIVATE_COMMANDS:
        previous = restrict_umask()
        # Restored when the command returns, for callers that run it in-process (tests).
        ctx.call_on_close(lambda: os.umask(previous))


@app.command()
def spec_schema() -> None:
    """Print the job-spec JSON Schema."""
    from trainforge.spec import json_schema_text

    print(json_schema_text(), end="")


def main() -> None:
    app()
