"""Credentials and endpoint, from the environment (never from the command line, where `ps` shows them)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from dispatcher.errors import ConfigError
from dispatcher.tim import rules

# Seconds for one request (`--timeout`), of which at most half for connecting: the API answers in
# about 350 ms, so a request still unanswered after 10 s is lost, and is retried.
DEFAULT_TIMEOUT = 10.0

# Documented demo credentials for the sandbox. They protect nothing: the sandbox runs on 127.0.0.1.
DEMO_SDKAPPID = 1400000000
DEMO_IDENTIFIER = "administrator"
DEMO_SECRET_KEY = "dispatcher-sandbox-demo-key"


@dataclasses.dataclass(frozen=True)
class Credentials:
    sdkappid: int
    identifier: str
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    usersig: str | None = dataclasses.field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be printed, for the log redactor."""
        return tuple(s for s in (self.secret_key, self.usersig) if s)


DEMO_CREDENTIALS = Credentials(DEMO_SDKAPPID, DEMO_IDENTIFIER, DEMO_SECRET_KEY)
MAX_SDKAPPID = 2**64 - 1  # the API carries it as an unsigned 64-bit number


def credentials_from_env(env: Mapping[str, str] | None = None, *, need_secret: bool = True) -> Credentials:
    """Read TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY (or TIM_USERSIG)."""
    env = os.environ if env is None else env
    for name in ("TIM_SDKAPPID", "TIM_IDENTIFIER", "TIM_SECRET_KEY", "TIM_USERSIG"):
        try:
            env.get(name, "").encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode; the value itself is never shown
            raise ConfigError(f"{name} is not valid UTF-8") from None
    missing = [name for name in ("TIM_SDKAPPID", "TIM_IDENTIFIER") if not env.get(name)]
    key = env.get("TIM_SECRET_KEY") or None
    usersig = env.get("TIM_USERSIG") or None
    if need_secret and key is None and usersig is None:
        missing.append("TIM_SECRET_KEY (or TIM_USERSIG)")
    if missing:
        raise ConfigError("missing credentials in the environment: " + ", ".join(missing))
    raw = env["TIM_SDKAPPID"]
    # Digits only: int() would also take " 14", "+14" and "1_400", none of which is an SDKAppID.
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_SDKAPPID):
        raise ConfigError(f"TIM_SDKAPPID must be a whole number from 1 to {MAX_SDKAPPID}, not {raw[:40]!r}")
    return Credentials(int(raw), env["TIM_IDENTIFIER"], key, usersig)


def sandbox_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    """The TIM_* credentials when they are all set, else the documented demo credentials."""
    env = os.environ if env is None else env
    if env.get("TIM_SDKAPPID") and env.get("TIM_IDENTIFIER") and env.get("TIM_SECRET_KEY"):
        return credentials_from_env(env)
    return DEMO_CREDENTIALS


def resolve_endpoint(region: str | None, endpoint: str | None, env: Mapping[str, str] | None = None) -> str:
    """`--endpoint` beats `--region`, which beats TIM_ENDPOINT, which beats TIM_REGION; default China."""
    env = os.environ if env is None else env
    if endpoint is None and region is None:
        for name in ("TIM_ENDPOINT", "TIM_REGION"):
            # Set but empty is a mistake (`TIM_ENDPOINT=$STAGING` with STAGING unset), not a wish
            # for the default region: that would be production.
            if name in env and not env[name].strip():
                raise ConfigError(f"{name} is set but empty; unset it, or give it a value")
        endpoint = env.get("TIM_ENDPOINT") or None
        region = env.get("TIM_REGION") or None
    if endpoint is not None:
        return check_endpoint(endpoint)
    name = region or rules.DEFAULT_REGION
    if name not in rules.REGIONS:
        raise ConfigError(f"unknown region {name!r}; choose one of: {', '.join(rules.REGIONS)}")
    return rules.REGIONS[name]


def resolve_backup(
    region: str | None, endpoint: str | None, backup: str | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The backup endpoint beside the main one `resolve_endpoint` gives; None when there is none.

    A backup comes from where its main endpoint came from, never from elsewhere: `--backup-endpoint`
    beside `--endpoint`, TIM_BACKUP_ENDPOINT beside TIM_ENDPOINT, and a region's backup domain
    (rules.BACKUP_DOMAINS) beside its main one. So a backup meant for one endpoint is never paired
    with another (an `--endpoint` given while the environment names a backup for TIM_ENDPOINT)."""
    env = os.environ if env is None else env
    if backup is not None:
        if endpoint is None:
            raise ConfigError("--backup-endpoint goes with --endpoint; a region's backup comes from its table")
        return _beside(check_endpoint(backup), check_endpoint(endpoint), "--backup-endpoint")
    if endpoint is not None:
        return None
    if region is None:
        if "TIM_BACKUP_ENDPOINT" in env:
            named = env["TIM_BACKUP_ENDPOINT"]
            if not named.strip():
                raise ConfigError("TIM_BACKUP_ENDPOINT is set but empty; unset it, or give it a value")
            if not env.get("TIM_ENDPOINT"):
                raise ConfigError("TIM_BACKUP_ENDPOINT goes with TIM_ENDPOINT; a region's backup comes from its table")
            return _beside(check_endpoint(named), check_endpoint(env["TIM_ENDPOINT"]), "TIM_BACKUP_ENDPOINT")
        if env.get("TIM_ENDPOINT"):
            return None
        region = env.get("TIM_REGION") or None
    return rules.BACKUP_DOMAINS.get(region or rules.DEFAULT_REGION)


def _beside(backup: str, main: str, name: str) -> str:
    if backup == main:
        raise ConfigError(f"{name} names the main endpoint itself; name another, or leave it out")
    return backup


def check_endpoint(endpoint: str) -> str:
    """A base URL we can send to, without its trailing slash; ConfigError naming what is wrong."""
    from yarl import URL

    shown = endpoint[:200]
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint {shown!r} must start with http:// or https://")
    if re.search(r"\s", endpoint):
        raise ConfigError(f"endpoint {shown!r} must not contain spaces")
    try:
        url = URL(endpoint)
        port = url.port
    except ValueError as exc:
        raise ConfigError(f"endpoint {shown!r} is not a valid URL: {exc}") from None
    if not url.host:
        raise ConfigError(f"endpoint {shown!r} has no host")
    if port == 0:
        raise ConfigError(f"endpoint {shown!r}: port must be between 1 and 65535")
    if url.query_string or url.fragment:
        raise ConfigError(f"endpoint {shown!r} must be a base URL, without a query or fragment")
    return endpoint.rstrip("/")
