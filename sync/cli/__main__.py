"""``python -m sync.cli``: the same CLI without the console script (tests, bare checkouts)."""

from sync.cli import main

main(prog_name="calsync")
