"""`dispatcher usersig`: print a UserSig for the configured admin."""

from __future__ import annotations

import argparse

from dispatcher.cli.output import write_stdout
from dispatcher.cli.status import EXIT_OK
from dispatcher.errors import UsageError


def run(args: argparse.Namespace) -> int:
    from dispatcher.errors import ConfigError
    from dispatcher.tim import config, usersig

    creds = config.credentials_from_env(need_secret=False)
    if creds.secret_key is None:
        raise ConfigError("TIM_SECRET_KEY is needed to make a UserSig")
    if not 0 < args.expire <= usersig.MAX_EXPIRE:
        raise UsageError(f"--expire must be between 1 and {usersig.MAX_EXPIRE} seconds")
    write_stdout(usersig.generate(creds.sdkappid, creds.identifier, creds.secret_key, args.expire) + "\n")
    return EXIT_OK
