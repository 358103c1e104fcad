"""`python -m pipeline.cli ...`: the `nser` command without its console script."""

from pipeline.cli import main

main()
