"""``python -m simclr_cli`` runs the command line (and is what torchrun launches)."""

from .cli.app import main

if __name__ == "__main__":
    main()
