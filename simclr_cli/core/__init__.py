"""The library behind the commands, in layers (see ``[tool.importlinter]`` in pyproject.toml).

It never imports typer, rich or ``simclr_cli.cli``: commands report through a progress callback.
"""
