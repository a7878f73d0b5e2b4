"""The ``simclr`` Typer application: registers one command per module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from .. import __version__
from . import (
    demo,
    duplicates,
    embed,
    finetune,
    predict,
    pretrain,
    probe,
    search,
    shard,
    visualize_aug,
)
from . import export as export_cli
from . import index as index_cli
from . import info as info_cli
from . import report as report_cli
from ._config import ConfigurableGroup
from ._errors import ReportingCommand
from ._exit import end_process, exit_code_of
from ._started import mark_process_start

app = typer.Typer(
    name="simclr",
    # Every command gets --config FILE and SIMCLR_<FLAG> environment variables (see _config.py);
    # every command is a ReportingCommand, whose errors end in one red line (see _errors.py).
    cls=ConfigurableGroup,
    help="SimCLR contrastive pretraining for any folder of unlabeled images.\n\n"
    "Start with [bold]simclr demo[/], then [bold]simclr pretrain ./images --out runs/first[/].",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: (name, function, examples shown under --help) of every command, in the order of --help.
COMMANDS: list[tuple[str, Callable[..., None], str | None]] = [
    ("pretrain", pretrain.pretrain_command, pretrain.EPILOG),
    ("embed", embed.embed_command, embed.EPILOG),
    ("index", index_cli.index_command, index_cli.EPILOG),
    ("search", search.search_command, search.EPILOG),
    ("duplicates", duplicates.duplicates_command, duplicates.EPILOG),
    ("demo", demo.demo_command, None),
    ("probe", probe.probe_command, probe.EPILOG),
    ("finetune", finetune.finetune_command, finetune.EPILOG),
    ("predict", predict.predict_command, predict.EPILOG),
    ("visualize-aug", visualize_aug.visualize_aug_command, visualize_aug.EPILOG),
    ("report", report_cli.report_command, report_cli.EPILOG),
    ("info", info_cli.info_command, info_cli.EPILOG),
    ("export", export_cli.export_command, export_cli.EPILOG),
    ("shard", shard.shard_command, shard.EPILOG),
]
for name, function, epilog in COMMANDS:
    app.command(name, cls=ReportingCommand, epilog=epilog)(function)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"simclr {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """SimCLR contrastive pretraining for any folder of unlabeled images."""


def main() -> None:
    """Console-script entry point: runs the command, then ends the process (see ``_exit``)."""
    mark_process_start()
    try:
        app()
    except SystemExit as request:
        end_process(exit_code_of(request))
    end_process(0)
