"""The ``simclr`` Typer application: registers one command per module."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import demo, embed, finetune, predict, pretrain, probe, visualize_aug
from . import export as export_cli
from . import info as info_cli
from . import report as report_cli
from ._config import ConfigurableGroup

app = typer.Typer(
    name="simclr",
    # Every command gets --config FILE and SIMCLR_<FLAG> environment variables (see _config.py).
    cls=ConfigurableGroup,
    help="SimCLR contrastive pretraining for any folder of unlabeled images.\n\n"
    "Start with [bold]simclr demo[/], then [bold]simclr pretrain ./images --out runs/first[/].",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("pretrain", epilog=pretrain.EPILOG)(pretrain.pretrain_command)
app.command("embed", epilog=embed.EPILOG)(embed.embed_command)
app.command("demo")(demo.demo_command)
app.command("probe", epilog=probe.EPILOG)(probe.probe_command)
app.command("finetune", epilog=finetune.EPILOG)(finetune.finetune_command)
app.command("predict", epilog=predict.EPILOG)(predict.predict_command)
app.command("visualize-aug", epilog=visualize_aug.EPILOG)(visualize_aug.visualize_aug_command)
app.command("report", epilog=report_cli.EPILOG)(report_cli.report_command)
app.command("info", epilog=info_cli.EPILOG)(info_cli.info_command)
app.command("export", epilog=export_cli.EPILOG)(export_cli.export_command)


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
    """Console-script entry point."""
    app()
