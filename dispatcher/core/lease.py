"""How long a worker's claim on a batch of a shared run holds unless renewed: the one default, read by
the run's options, the command line's help and the run in PostgreSQL."""

from __future__ import annotations

from typing import Final

DEFAULT_LEASE: Final = 30.0  # seconds; `--lease`, which must be at least twice `--timeout`
