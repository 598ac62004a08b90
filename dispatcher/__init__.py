"""dispatcher: send Tencent Cloud IM group system notifications from JSONL jobs, safely and resumably.

The library API: build a `RunConfig`, run an `Engine`, read its `Summary`; `Sandbox` is the local
emulator of the endpoint. The CLI (`dispatcher.cli`) is a thin layer over these.
"""

from typing import TYPE_CHECKING, Any

from dispatcher.version import DISTRIBUTION, __version__

if TYPE_CHECKING:
    from dispatcher.errors import ConfigError, DispatcherError, InputError, JournalError, UsageError
    from dispatcher.observe.summary import Summary
    from dispatcher.run.config import RunConfig
    from dispatcher.run.engine import Engine
    from dispatcher.run.retry import RetryPolicy
    from dispatcher.sandbox import Faults, Group, Sandbox
    from dispatcher.tim.config import Credentials

# Imported on first use, so that `dispatcher --help` does not pay for aiohttp.
_EXPORTS = {
    "Credentials": "dispatcher.tim.config",
    "Engine": "dispatcher.run.engine",
    "RunConfig": "dispatcher.run.config",
    "ConfigError": "dispatcher.errors",
    "DispatcherError": "dispatcher.errors",
    "InputError": "dispatcher.errors",
    "JournalError": "dispatcher.errors",
    "UsageError": "dispatcher.errors",
    "RetryPolicy": "dispatcher.run.retry",
    "Faults": "dispatcher.sandbox",
    "Group": "dispatcher.sandbox",
    "Sandbox": "dispatcher.sandbox",
    "Summary": "dispatcher.observe.summary",
}
__all__ = [
    "DISTRIBUTION",
    "ConfigError",
    "Credentials",
    "DispatcherError",
    "Engine",
    "Faults",
    "Group",
    "InputError",
    "JournalError",
    "RetryPolicy",
    "RunConfig",
    "Sandbox",
    "Summary",
    "UsageError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
