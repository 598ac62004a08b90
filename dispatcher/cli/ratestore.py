"""Where the rate budget of `send` and `work` lives."""

from __future__ import annotations

import argparse
import os


def rate_store(args: argparse.Namespace) -> None:
    """`args.store`: --rate-store, else DISPATCHER_RATE_STORE; a run in PostgreSQL without either paces
    in the budget its own database keeps."""
    from dispatcher.pacing import store as limiter

    named = args.rate_store or os.environ.get(limiter.ENV_VAR)
    if named is None and args.journal_uri is not None:
        args.store = limiter.in_journal_database(args.journal_uri.conninfo)
    else:
        args.store = limiter.parse_store(named or limiter.MEMORY)
    limiter.check_available(args.store)
