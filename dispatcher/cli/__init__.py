"""The command line: a thin layer over the library, one module per command.

`main` (the entry: signals, standard files, exit statuses), `parser` (every flag), `output` (the one
place that prints), and `send`, `dryrun`, `work`, `report`, `sandbox`, `usersig`. Heavy imports wait
until a command needs them, so `dispatcher --help` starts fast. The console script is
`dispatcher.cli:main`."""

from dispatcher.cli.main import main

__all__ = ["main"]
