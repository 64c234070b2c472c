"""`python -m emaki` = the `emaki` command."""

from emaki.cli import main

main()
