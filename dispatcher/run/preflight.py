"""The checks a run makes once, before it reads or sends anything: its options, its inputs, its
journal against its inputs, the open files it needs."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dispatcher.errors import InputError, UsageError
from dispatcher.run.retry import RetryPolicy
from dispatcher.tim import rules
from dispatcher.tim.config import DEFAULT_TIMEOUT

if TYPE_CHECKING:  # the command line imports this module for its defaults: the jobs and journal wait
    from dispatcher.journal.outcomes import Journal

MAX_CONCURRENCY = 10_000  # tasks and connections; beyond this a run only spends memory
# The default concurrency: half the rate, within these bounds (see default_concurrency).
DEFAULT_CONCURRENCY_RANGE = (8, 512)
# Descriptors a run needs besides one a connection: the journal, exports, their copies, stdio, DNS.
RESERVED_FILES = 64
# A run in PostgreSQL: a claim's lease is at least this many request timeouts (see check_options).
LEASE_PER_TIMEOUT = 2


def reserve_open_files(needed: int) -> None:
    """Make sure the process may open `needed` files, raising its soft limit toward the hard one.

    A run out of descriptors cannot start the thread that syncs its journal, nor open a connection,
    and every request then looks like an unreachable endpoint. Better refuse at once, naming why.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise UsageError(
            f"--concurrency needs about {needed} open files and this process may open {hard} (ulimit -n); "
            "lower --concurrency or raise the limit",
            library=f"RunConfig.concurrency needs about {needed} open files and this process may open {hard} "
            "(ulimit -n); lower RunConfig.concurrency or raise the limit",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def default_concurrency(rate: float) -> int:
    """Enough requests in flight to hold `rate` at 500 ms latency (the API answers in ~350 ms),
    within DEFAULT_CONCURRENCY_RANGE: past that, more workers cost memory and buy nothing."""
    low, high = DEFAULT_CONCURRENCY_RANGE
    return min(high, max(low, math.ceil(rate / 2)))


def check_options(
    *,
    batch_size: int = rules.MAX_MEMBERS,
    rate: float | None = rules.DEFAULT_RATE,
    concurrency: int | None = None,
    max_attempts: int = RetryPolicy.max_attempts,
    timeout: float = DEFAULT_TIMEOUT,
    resume: bool = False,
    retry_failed: bool = False,
    message_quota: int = rules.DEFAULT_MESSAGE_QUOTA,
    lease: float,
    shared_run: bool = False,
) -> None:
    """The run's options, checked in one place for the CLI (before credentials) and RunConfig alike.
    An option a caller does not have keeps its default: a worker (`dispatcher work`) has no batch
    size, and its `rate` None takes the run's. `shared_run`: the run is kept in PostgreSQL, where
    `lease` must outlast a request. `lease` has no default here: run.config holds it."""
    if not 1 <= batch_size <= rules.MAX_MEMBERS:
        raise UsageError(
            f"--batch-size must be between 1 and {rules.MAX_MEMBERS}",
            library=f"RunConfig.batch_size must be between 1 and {rules.MAX_MEMBERS}",
        )
    if message_quota < batch_size:  # a quota of 200 a minute (a trial edition, say) works with --batch-size 200
        raise UsageError(
            f"--message-quota must be at least --batch-size ({batch_size}): one full batch of batchsendmsg",
            library=f"RunConfig.message_quota must be at least RunConfig.batch_size ({batch_size}): "
            "one full batch of batchsendmsg",
        )
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate must be a positive number", library="RunConfig.rate must be a positive number")
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(
            f"--concurrency must be between 1 and {MAX_CONCURRENCY}",
            library=f"RunConfig.concurrency must be between 1 and {MAX_CONCURRENCY}",
        )
    if max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1", library="RetryPolicy.max_attempts must be at least 1")
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(
            "--timeout must be a positive number of seconds",
            library="RunConfig.timeout must be a positive number of seconds",
        )
    if not (math.isfinite(lease) and lease > 0):
        raise UsageError("--lease must be more than 0 seconds", library="RunConfig.lease must be more than 0 seconds")
    if shared_run and lease < LEASE_PER_TIMEOUT * timeout:
        # Renewed every third of the lease, a claim always holds two thirds of it: enough for a request.
        raise UsageError(
            f"--lease {lease:g} is too short for --timeout {timeout:g}: a claim must hold for a whole request "
            f"between its renewals; give --lease {LEASE_PER_TIMEOUT * timeout:g} or more, or a shorter --timeout",
            library=f"RunConfig(lease={lease:g}) is too short for RunConfig(timeout={timeout:g}): a claim must hold "
            f"for a whole request between its renewals; set lease={LEASE_PER_TIMEOUT * timeout:g} or more, "
            "or a shorter timeout",
        )
    if retry_failed and not resume:
        raise UsageError(
            "--retry-failed needs --resume (it re-drives the failed batches of a journal)",
            library="RunConfig(retry_failed=True) needs RunConfig(resume=True) "
            "(it re-drives the failed batches of a journal)",
        )


def check_readable(paths: tuple[str, ...]) -> None:
    """Refuse a run whose jobs files cannot be read, before anything is sent.

    Nothing is opened here: opening a FIFO blocks until a writer comes, and opening and closing it
    would hand the writer a SIGPIPE. The reader opens each input once, when it gets to it.
    """
    from dispatcher.jobs.reader import STDIN
    from dispatcher.jobs.shape import check_shape

    for path in paths:
        if path == STDIN:
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: cannot read: Is a directory")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot read: Permission denied")
        if stat.S_ISREG(st.st_mode):  # a stream is read once, by the reader: its start is not peeked at
            check_shape(path)


def check_not_journal(paths: tuple[str, ...], journal: Journal) -> None:
    """Refuse jobs that are the journal itself under another name (a link, standard input fed from
    it): the run would read its own outcome lines back as jobs, without end."""
    from dispatcher.jobs.reader import STDIN

    for path in paths:
        try:
            st = os.fstat(0) if path == STDIN else os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == journal.identity:
            raise UsageError(f"{path} is the outcome journal {journal.path}, not a jobs file; leave it out of the jobs")


def is_stream(path: str) -> bool:
    """True for input that can be read only once: standard input, a pipe, a FIFO, a device."""
    from dispatcher.jobs.reader import STDIN

    if path == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_api_rates(api_rates: Iterable[tuple[str, float]]) -> None:
    """--api-rate's pairs: an API the dispatcher drives, at a positive rate."""
    from dispatcher.tim.apis import REGISTRY

    for name, rate in api_rates:
        if name not in REGISTRY:
            raise UsageError(f"--api-rate {name}: no such API; the APIs are {', '.join(REGISTRY)}")
        if not (math.isfinite(rate) and rate > 0):
            raise UsageError(f"--api-rate {name}={rate:g}: the rate must be a positive number of calls a second")
        top = REGISTRY[name].max_rate
        if top is not None and rate > top:
            raise UsageError(
                f"--api-rate {name}={rate:g}: Tencent takes at most {top:g} a second, whatever the edition"
            )


def check_retry_unknown(retry_unknown: bool, *, resume: bool, shared_run: bool) -> None:
    """--retry-unknown resends what may have been delivered: only on a resume, of a file journal."""
    if not retry_unknown:
        return
    if not resume:
        raise UsageError("--retry-unknown needs --resume: it sends again the batches a journal holds as unknown")
    if shared_run:
        raise UsageError("--retry-unknown takes a file journal; a run in PostgreSQL keeps its unknown batches final")
