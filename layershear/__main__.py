"""``python -m layershear`` (and ``torchrun -m layershear``) runs the CLI."""

from layershear.cli import main

main()
