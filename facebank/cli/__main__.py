"""`python -m facebank.cli`: the same app as the `facebank` command."""

from facebank.cli import main

main()
