"""Where the rate budget of `send` and `work` lives, and the APIs it paces apart (--api-rate)."""

from __future__ import annotations

import argparse
import os

from dispatcher.errors import UsageError

API_RATE_ENV = "DISPATCHER_API_RATE"  # --api-rate's pairs, comma-separated: timpush_batch=40,timpush_push=1


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


def api_rates_of(args: argparse.Namespace) -> None:
    """`args.api_rates`: --api-rate API=N, repeatable, after those of DISPATCHER_API_RATE (comma-separated)."""
    import os

    from dispatcher.run.preflight import check_api_rates

    given = [(API_RATE_ENV, part) for part in os.environ.get(API_RATE_ENV, "").split(",") if part.strip()]
    rates: dict[str, float] = {}
    for where, text in [*given, *(("--api-rate", part) for part in args.api_rate or ())]:
        name, sep, value = text.strip().partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not name:
            raise UsageError(f"{where} {text}: give API=N, as in timpush_batch=40")
        if rate <= 0:
            raise UsageError(f"{where} {text}: the rate must be a positive number of calls a second")
        try:  # each pair checked where it was given: a mistake in the environment is named there
            check_api_rates([(name.strip(), rate)])
        except UsageError as exc:
            raise UsageError(str(exc).replace("--api-rate", where, 1)) from None
        rates[name.strip()] = rate
    args.api_rates = tuple(rates.items())
