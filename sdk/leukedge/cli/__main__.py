"""``python -m leukedge.cli …``: the ``leukedge`` command."""

from leukedge.cli import main

main()
