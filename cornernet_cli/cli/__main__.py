"""`python -m cornernet_cli.cli ...` (torchrun too): the same as the `cornernet` console script."""

from cornernet_cli.cli import main

main()
