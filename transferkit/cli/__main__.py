"""``python -m transferkit.cli``: the ``transferkit`` script."""

from transferkit.cli import main

main()
