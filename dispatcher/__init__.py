"""dispatcher: send Tencent Cloud IM messages (group system notifications, one-to-one messages with
batchsendmsg, group messages with send_group_msg) from JSONL jobs, batched, rate-limited, retried and journaled, so that
an interrupted run resumes without resending.

The library API: `Runner(RunConfig(...)).run()` does what `dispatcher send` does (`work(URI, ...)`
what `dispatcher work` does) and returns the
run's `Summary` (its `exit_code` is the command's exit status); `Engine` is the send loop alone.
Every event of a run reaches its `Subscriber`s; `Limiter` and `Quota` are the pacing seam;
`Sandbox` is the local emulator of the endpoints, and `dispatcher.testing` has what tests need.
The CLI (`dispatcher.cli`) is a thin layer over these. Everything not named in `__all__` is private.

The names are imported on first use, so that `dispatcher --help` does not pay for the engine's imports.
"""

from typing import TYPE_CHECKING, Any

from dispatcher.version import DISTRIBUTION, __version__

if TYPE_CHECKING:
    from dispatcher.errors import (
        ConfigError,
        DispatcherError,
        InputError,
        JournalError,
        JournalLockedError,
        JournalWriteError,
        OutputError,
        RateStoreError,
        SignatureError,
        UsageError,
    )
    from dispatcher.jobs.values import DirectMessage, GroupMessage, Notification
    from dispatcher.journal.outcomes import Journal
    from dispatcher.journal.store import JournalStore
    from dispatcher.journal.uri import JournalURI
    from dispatcher.observe.events import (
        BatchClaimed,
        BatchSkipped,
        Event,
        Halted,
        JobAccepted,
        JobRejected,
        JobsCutShort,
        RateWaited,
        ReplyRecorded,
        StopRequested,
        Subscriber,
    )
    from dispatcher.observe.metrics import Exporter, MetricsOptions
    from dispatcher.observe.summary import Summary
    from dispatcher.pacing.base import Limiter, Quota, StoreURI
    from dispatcher.pacing.budgets import Budgets
    from dispatcher.pacing.memory import RateLimiter
    from dispatcher.run.config import RunConfig
    from dispatcher.run.engine import Engine
    from dispatcher.run.retry import RetryPolicy
    from dispatcher.run.runner import Runner, Worked, work
    from dispatcher.sandbox import Faults, Group, Sandbox
    from dispatcher.tim.config import DEMO_CREDENTIALS, Credentials, credentials_from_env
    from dispatcher.tim.rules import REGIONS
    from dispatcher.tim.usersig import Signer

# Where each public name lives; the modules themselves are private.
_EXPORTS = {
    **dict.fromkeys(
        (
            "ConfigError",
            "DispatcherError",
            "InputError",
            "JournalError",
            "JournalLockedError",
            "JournalWriteError",
            "OutputError",
            "RateStoreError",
            "SignatureError",
            "UsageError",
        ),
        "dispatcher.errors",
    ),
    **dict.fromkeys(
        (
            "BatchClaimed",
            "BatchSkipped",
            "Event",
            "Halted",
            "JobAccepted",
            "JobRejected",
            "JobsCutShort",
            "RateWaited",
            "ReplyRecorded",
            "StopRequested",
            "Subscriber",
        ),
        "dispatcher.observe.events",
    ),
    "Summary": "dispatcher.observe.summary",
    "Exporter": "dispatcher.observe.metrics",
    "MetricsOptions": "dispatcher.observe.metrics",
    "Limiter": "dispatcher.pacing.base",
    "Quota": "dispatcher.pacing.base",
    "StoreURI": "dispatcher.pacing.base",
    "Budgets": "dispatcher.pacing.budgets",
    "RateLimiter": "dispatcher.pacing.memory",
    "RunConfig": "dispatcher.run.config",
    "Engine": "dispatcher.run.engine",
    "RetryPolicy": "dispatcher.run.retry",
    "Runner": "dispatcher.run.runner",
    "Worked": "dispatcher.run.runner",
    "work": "dispatcher.run.runner",
    "Faults": "dispatcher.sandbox",
    "Group": "dispatcher.sandbox",
    "Sandbox": "dispatcher.sandbox",
    "Credentials": "dispatcher.tim.config",
    "credentials_from_env": "dispatcher.tim.config",
    "DEMO_CREDENTIALS": "dispatcher.tim.config",
    "REGIONS": "dispatcher.tim.rules",
    "Signer": "dispatcher.tim.usersig",
    "Journal": "dispatcher.journal.outcomes",
    "Notification": "dispatcher.jobs.values",
    "DirectMessage": "dispatcher.jobs.values",
    "GroupMessage": "dispatcher.jobs.values",
    "JournalStore": "dispatcher.journal.store",
    "JournalURI": "dispatcher.journal.uri",
}

__all__ = [
    "DEMO_CREDENTIALS",
    "DISTRIBUTION",
    "REGIONS",
    "BatchClaimed",
    "BatchSkipped",
    "Budgets",
    "ConfigError",
    "Credentials",
    "DirectMessage",
    "DispatcherError",
    "Engine",
    "Event",
    "Exporter",
    "Faults",
    "Group",
    "GroupMessage",
    "Halted",
    "InputError",
    "JobAccepted",
    "JobRejected",
    "JobsCutShort",
    "Journal",
    "JournalError",
    "JournalLockedError",
    "JournalStore",
    "JournalURI",
    "JournalWriteError",
    "Limiter",
    "MetricsOptions",
    "Notification",
    "OutputError",
    "Quota",
    "RateLimiter",
    "RateStoreError",
    "RateWaited",
    "ReplyRecorded",
    "RetryPolicy",
    "RunConfig",
    "Runner",
    "Sandbox",
    "SignatureError",
    "Signer",
    "StopRequested",
    "StoreURI",
    "Subscriber",
    "Summary",
    "UsageError",
    "Worked",
    "__version__",
    "credentials_from_env",
    "work",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once: the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
