"""The package's public API: a curated `__all__`, every name of it importable from `dispatcher`, and
every type a public signature uses among them; nothing heavy imported by `import dispatcher`."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import dispatcher

EXCEPTIONS = {
    "DispatcherError",
    "UsageError",
    "ConfigError",
    "InputError",
    "JournalError",
    "JournalLockedError",
    "OutputError",
    "JournalWriteError",
    "SignatureError",
    "RateStoreError",
}
EVENTS = {
    "Event",
    "Subscriber",
    "JobAccepted",
    "JobRejected",
    "BatchClaimed",
    "BatchSkipped",
    "RateWaited",
    "ReplyRecorded",
    "Halted",
    "StopRequested",
    "JobsCutShort",
}
RUN = {"Runner", "Engine", "RunConfig", "RetryPolicy", "Summary", "Credentials", "Signer", "Budgets", "Journal"}
RUN |= {"JournalStore", "JournalURI", "work", "Worked", "credentials_from_env", "DEMO_CREDENTIALS", "REGIONS"}
PACING = {"Limiter", "Quota", "RateLimiter", "StoreURI"}
SANDBOX = {"Sandbox", "Faults", "Group"}
METRICS = {"Exporter", "MetricsOptions"}
JOBS = {"Notification", "DirectMessage", "GroupMessage"}  # jobs held in memory, for Runner(jobs=...)


def test_all_names_the_public_api_and_nothing_else() -> None:
    assert set(dispatcher.__all__) == EXCEPTIONS | EVENTS | RUN | PACING | SANDBOX | METRICS | JOBS | {
        "DISTRIBUTION",
        "__version__",
    }
    assert dir(dispatcher) == sorted(dispatcher.__all__)


def test_every_public_name_resolves_from_the_package() -> None:
    for name in dispatcher.__all__:
        assert getattr(dispatcher, name) is not None, name
    assert issubclass(dispatcher.JournalLockedError, dispatcher.JournalError)
    assert issubclass(dispatcher.RateStoreError, dispatcher.DispatcherError)


def test_every_exception_of_the_library_is_public() -> None:
    from dispatcher import errors

    defined = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, Exception)}
    assert defined == EXCEPTIONS


def test_the_types_of_the_public_signatures_are_public() -> None:
    """Runner, Engine, RunConfig and Budgets take and give only types a user can import from here."""
    public = {name: getattr(dispatcher, name) for name in dispatcher.__all__}
    missing: set[str] = set()
    for cls in (dispatcher.Runner, dispatcher.Engine, dispatcher.RunConfig, dispatcher.Budgets):
        for fn in (cls.__init__, getattr(cls, "run", None)):
            if fn is None:
                continue
            for hint in typing.get_type_hints(fn, localns=public).values():
                for arg in _flatten(hint):
                    module, name = getattr(arg, "__module__", ""), getattr(arg, "__name__", "")
                    if module.startswith("dispatcher") and name not in dispatcher.__all__:
                        missing.add(f"{module}.{name}")
    assert missing == set()


def _flatten(hint: object) -> list[object]:
    args = typing.get_args(hint)
    return [hint, *[a for arg in args for a in _flatten(arg)]] if args else [hint]


def test_import_dispatcher_imports_nothing_heavy() -> None:
    code = "import dispatcher, sys; print(sorted(m for m in ('aiohttp', 'structlog', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_descriptions_name_every_api_not_only_notifications() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    described = tomllib.loads((root / "pyproject.toml").read_text())["project"]["description"]
    helped = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for text in (described, helped, dispatcher.__doc__ or ""):
        flat = " ".join(text.split())
        assert "group system notifications" in flat and "batchsendmsg" in flat and "send_group_msg" in flat, flat
