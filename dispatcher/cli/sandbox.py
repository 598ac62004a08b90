"""`dispatcher sandbox`: serve the local emulator of the endpoint on 127.0.0.1 until a stop signal."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dispatcher.cli.output import say_error, write_stdout
from dispatcher.cli.status import EXIT_OK
from dispatcher.errors import UsageError

if TYPE_CHECKING:
    from dispatcher.tim.config import Credentials


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from dispatcher.run.signals import STOP_SIGNALS
    from dispatcher.sandbox import Faults, Sandbox, load_accounts, load_groups
    from dispatcher.tim import config

    _check(args)
    groups = load_groups(args.groups) if args.groups else None
    accounts = load_accounts(args.accounts) if args.accounts else None
    faults = Faults(
        args.fail_rate,
        args.latency,
        args.jitter,
        args.drop_rate,
        args.http502_rate,
        args.seed,
        arrival_jitter=args.arrival_jitter,
    )
    emulator = Sandbox(
        config.sandbox_credentials(),
        groups=groups,
        rate=args.rate,
        faults=faults,
        accounts=accounts,
        message_quota=args.message_quota,
        api_rates=_api_rates(args.api_rate or ()),
        push_enabled=not args.no_push_service,
        push_daily_limit=args.push_daily_limit,
    )

    async def serve() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name in STOP_SIGNALS:
            loop.add_signal_handler(getattr(signal, name), done.set)
        try:
            await emulator.serve(args.port, done, lambda url: _started(url, emulator.credentials))
        except OSError as exc:
            raise UsageError(f"--port {args.port}: cannot listen on 127.0.0.1: {exc.strerror}") from None

    asyncio.run(serve())
    return EXIT_OK


def _started(url: str, credentials: Credentials) -> None:
    """The URL alone on stdout (a script reads that line); for a person, on stderr, how to use it."""
    from dispatcher.tim.config import DEMO_CREDENTIALS

    write_stdout(url + "\n")
    if credentials == DEMO_CREDENTIALS:  # public demo values: shown so they can be pasted
        use = (
            f"export TIM_SDKAPPID={credentials.sdkappid} TIM_IDENTIFIER={credentials.identifier} "
            f"TIM_SECRET_KEY={credentials.secret_key} TIM_ENDPOINT={url}"
        )
    else:  # the environment's own: never shown
        use = f"export TIM_ENDPOINT={url}  # it accepts the TIM_* credentials of this environment"
    say_error(
        f"sandbox: send to it with\n  {use}\n"
        f"sandbox: what it got: {url}/sandbox/stats and {url}/sandbox/ledger\n"
        "sandbox: Ctrl-C to stop"
    )


def _check(args: argparse.Namespace) -> None:
    for name in ("fail_rate", "drop_rate", "http502_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("latency", "jitter", "arrival_jitter"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a number of seconds, 0 or more")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.rate < 1:
        raise UsageError("--rate must be at least 1")
    if args.message_quota < 1:
        raise UsageError("--message-quota must be at least 1")
    if args.push_daily_limit < 1:
        raise UsageError("--push-daily-limit must be at least 1")
    _api_rates(args.api_rate or ())


def _api_rates(given: Sequence[str]) -> dict[str, int]:
    """--api-rate API=N: each a known API at a whole number of calls a second, 1 or more."""
    from dispatcher.tim.apis import REGISTRY

    rates = {}
    for text in given:
        name, _, value = text.partition("=")
        if name not in REGISTRY:
            raise UsageError(f"--api-rate {text}: no such API; the APIs are {', '.join(REGISTRY)}")
        if not (value.isdigit() and int(value) >= 1):
            raise UsageError(f"--api-rate {text}: the rate must be a whole number of calls a second, 1 or more")
        rates[name] = int(value)
    return rates
