"""The command line: a thin layer over the library, one module per command.

`main` (the entry: signals, standard files, exit statuses), `parser` (every flag), `output` (the one
place that prints), and `send`, `dryrun`, `work`, `check`, `report`, `sandbox`, `usersig`. Heavy imports wait
until a command needs them, so `dispatcher --help` starts fast. The console script is
`dispatcher.cli:main`."""

# The attribute `dispatcher.cli.main` is then this function, as the console script wants; the module
# stays reachable as `from dispatcher.cli.main import ...`.
from dispatcher.cli.main import main

__all__ = ["main"]
