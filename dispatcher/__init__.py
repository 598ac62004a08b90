"""dispatcher: send Tencent Cloud IM group system notifications from JSONL jobs, safely and resumably.

The library API: build a `RunConfig`, run an `Engine`, read its `Summary`; `Sandbox` is the local
emulator of the endpoint. The CLI (`dispatcher.cli`) is a thin layer over these.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

# What pip knows it as (`dispatcher` on PyPI is an unrelated library); the import package and the
# command stay `dispatcher`. pyproject.toml's [project] name says the same, and a test builds the
# wheel and checks the two agree.
DISTRIBUTION = "tim-dispatcher"

if TYPE_CHECKING:
    from dispatcher.config import Credentials
    from dispatcher.engine import Engine, RunConfig
    from dispatcher.errors import ConfigError, DispatcherError, InputError, JournalError, UsageError
    from dispatcher.retry import RetryPolicy
    from dispatcher.sandbox import Faults, Group, Sandbox
    from dispatcher.summary import Summary

# Imported on first use, so that `dispatcher --help` does not pay for aiohttp.
_EXPORTS = {
    "Credentials": "dispatcher.config",
    "Engine": "dispatcher.engine",
    "RunConfig": "dispatcher.engine",
    "ConfigError": "dispatcher.errors",
    "DispatcherError": "dispatcher.errors",
    "InputError": "dispatcher.errors",
    "JournalError": "dispatcher.errors",
    "UsageError": "dispatcher.errors",
    "RetryPolicy": "dispatcher.retry",
    "Faults": "dispatcher.sandbox",
    "Group": "dispatcher.sandbox",
    "Sandbox": "dispatcher.sandbox",
    "Summary": "dispatcher.summary",
}
__all__ = [
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
