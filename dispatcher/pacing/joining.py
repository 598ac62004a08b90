"""A worker that joins a shared run paces with the run, never privately."""

from __future__ import annotations

from dispatcher.errors import UsageError


def _store_named(shown: str) -> str:
    return shown if shown.startswith("the ") else f"the rate store {shown}"


def same_pacing(shown: str, run_rate: float, run_store: str, rate: float | None, store_shown: str) -> float:
    """Refuse another store or rate than the run's (`shown` names the run), naming what the run
    uses. The rate the worker uses (the run's, when it names none)."""
    if run_store in ("memory://", ""):
        raise UsageError(
            f"{shown}: the run's send paces alone (memory://); workers join only a run whose budget is shared: "
            "send it without --rate-store (the budget is then kept in the journal's database) or with a shared one",
            library=f"{shown}: the run's send paces alone (memory://); workers join only a run whose budget is "
            "shared: send it without a store (the budget is then kept in the journal's database) or with a shared one",
        )
    if store_shown != run_store:
        raise UsageError(
            f"{shown}: the run paces in {_store_named(run_store)}, not {_store_named(store_shown)}: "
            "name the same with --rate-store (or DISPATCHER_RATE_STORE), or none for the journal's database",
            library=f"{shown}: the run paces in {_store_named(run_store)}, not {_store_named(store_shown)}: "
            "give work(store=...) the same, or None for the journal's database",
        )
    if rate is not None and rate != run_rate:
        raise UsageError(
            f"{shown}: the run paces at --rate {run_rate:g}, not {rate:g}: leave --rate out or match it",
            library=f"{shown}: the run paces at rate {run_rate:g}, not {rate:g}: give work(rate=None) or match it",
        )
    return run_rate
