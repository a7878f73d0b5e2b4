"""The ``simclr`` command line: one thin module per command over ``simclr_cli.core``."""
