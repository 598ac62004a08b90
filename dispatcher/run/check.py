"""`dispatcher check`: try a set-up with the real credentials and endpoint, sending no message.

It reads the jobs as a send does (the same validation), then asks Tencent's read-only calls:
`account_check` of the admin account and of every sender the jobs name (`From_Account`), and
`get_group_info` of every group they name, 50 a request. The requests go through the send's
client and signer, each paced by one rate limiter, so a check counts against the app's rate like
any request. The first request tells whether the credentials, the admin and the region are
accepted; its refusal is the one a send's first request would get.

batchsendmsg jobs name accounts, not groups. Only their sender is checked: a sender that does not
exist fails every batch of its job, while a recipient that does not exist fails alone (70107), as
the send reports. Checking every recipient would be a send's worth of requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from urllib.parse import urlsplit

from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.observe.plan import MAX_LISTED_REJECTIONS
from dispatcher.pacing.base import Limiter
from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.client import Client, Reply
from dispatcher.run.failover import Failover
from dispatcher.tim import codes, rules
from dispatcher.tim.apis import account_check, group_info
from dispatcher.tim.apis.account_check import AccountFact
from dispatcher.tim.apis.group_info import GroupFact
from dispatcher.tim.config import DEFAULT_TIMEOUT, Credentials
from dispatcher.tim.usersig import Signer

EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 2
ATTEMPTS = 3  # tries of one request the server asks to repeat (10002, 60007, ...)
IN_FLIGHT = 8  # requests at once: a check of thousands of groups is not one request at a time

# What a refusal of the first request says about the set-up: the finding it belongs to.
ADMIN_CODES = frozenset({rules.NOT_ADMIN, 10007, 90009, 70403})
SIGNATURE_CODES = frozenset({70001, rules.SIG_INVALID, 70009, rules.SIG_IDENTIFIER_MISMATCH, 70014, 70016, 70050})


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the check: what was checked, whether it passed (None: not known), and what was seen."""

    label: str  # credentials, admin, region, endpoint, sender, groups
    ok: bool | None
    text: str
    stops_a_run: bool = False  # a send would stop at its first request (exit 2)


@dataclasses.dataclass(frozen=True)
class JobsRead:
    """What the check needs of the jobs: their groups and senders, and the rejected jobs."""

    jobs: int = 0
    rejected: int = 0
    rejections: tuple[Rejection, ...] = ()  # the first MAX_LISTED_REJECTIONS of them, as a dry run lists
    groups: tuple[str, ...] = ()  # GroupIds, in the order the jobs first name them
    senders: tuple[str, ...] = ()  # From_Account values, in the same order


@dataclasses.dataclass(frozen=True)
class CheckResult:
    endpoint: str
    sdkappid: int
    admin: str
    jobs: JobsRead
    findings: tuple[Finding, ...]
    groups: tuple[GroupFact, ...]  # one per GroupId of the jobs that was asked about
    senders: tuple[AccountFact, ...]
    requests: int  # requests made, retries included
    backup: str | None = None  # the endpoint's backup, tried when a connection to the endpoint is not made

    @property
    def missing_groups(self) -> tuple[GroupFact, ...]:
        return tuple(g for g in self.groups if not g.exists)

    @property
    def missing_senders(self) -> tuple[AccountFact, ...]:
        return tuple(a for a in self.senders if not a.exists)

    @property
    def exit_code(self) -> int:
        """2 when a send would stop (credentials, admin, region, endpoint); 1 when it would run but
        some batches would fail (a group or sender that does not exist) or a job would be rejected,
        as the send itself would exit; else 0."""
        if any(f.stops_a_run for f in self.findings):
            return EXIT_STOPPED
        if self.missing_groups or self.missing_senders or self.jobs.rejected:
            return EXIT_FAILED
        return EXIT_OK


def read_for_check(paths: Sequence[str]) -> JobsRead:
    """Read every job as a send does, keeping its group and sender; bounded by the jobs' distinct
    groups and senders, not by their recipients."""
    jobs = rejected = 0
    rejections: list[Rejection] = []
    groups: dict[str, None] = {}
    senders: dict[str, None] = {}
    for item in read_jobs(paths, rules.MAX_MEMBERS):
        jobs += 1
        if isinstance(item, Rejection):
            rejected += 1
            if len(rejections) < MAX_LISTED_REJECTIONS:
                rejections.append(item)
            continue
        assert isinstance(item, Job)
        if item.group_id is not None:
            groups.setdefault(item.group_id)
        sender = item.fields.get("From_Account")
        if isinstance(sender, str):
            senders.setdefault(sender)
    return JobsRead(jobs, rejected, tuple(rejections), tuple(groups), tuple(senders))


async def check_setup(
    jobs: JobsRead,
    credentials: Credentials,
    endpoint: str,
    *,
    rate: float = rules.DEFAULT_RATE,
    request_timeout: float = DEFAULT_TIMEOUT,
    limiter: Limiter | None = None,
    in_flight: int = IN_FLIGHT,
    backup: str | None = None,
) -> CheckResult:
    """Ask the read-only calls about `jobs` at `endpoint`, paced by `limiter` (default: one
    RateLimiter at `rate` for the whole check), at most `in_flight` requests at once, each given
    `request_timeout` seconds as a send's. Sends no message. With a `backup`, a request that could
    not connect to `endpoint` goes to the backup next, as a send's would."""
    signer = Signer(credentials.sdkappid, credentials.identifier, credentials.secret_key, credentials.usersig)
    client = Client(
        endpoint,
        credentials.sdkappid,
        credentials.identifier,
        signer,
        concurrency=in_flight,
        timeout=request_timeout,
        failover=Failover(endpoint, backup),
    )
    caller = _Caller(client, signer, limiter or RateLimiter(rate), in_flight)
    try:
        found = await _check(jobs, credentials, endpoint, caller)
    finally:
        await client.aclose()
    if caller.failed_over is not None:  # what a send would meet too: said, though the backup answered
        moved = Finding("endpoint", None, f"unreachable: {caller.failed_over}; the requests went to the backup")
        found = dataclasses.replace(found, findings=(moved, *found.findings))
    return dataclasses.replace(found, backup=backup)


async def _check(jobs: JobsRead, credentials: Credentials, endpoint: str, caller: _Caller) -> CheckResult:
    admin = credentials.identifier
    host = urlsplit(endpoint).netloc or endpoint

    def result(
        findings: list[Finding], groups: Sequence[GroupFact] = (), senders: Sequence[AccountFact] = ()
    ) -> CheckResult:
        return CheckResult(
            endpoint, credentials.sdkappid, admin, jobs, tuple(findings), tuple(groups), tuple(senders), caller.requests
        )

    # The first request: the admin and the first senders. Its refusal is what a send would get first.
    accounts = [admin, *(s for s in jobs.senders if s != admin)]
    first = accounts[: account_check.MAX_ACCOUNTS]
    reply, doc = await caller.call(account_check.PATH, account_check.body(first))
    if reply.error_code != rules.OK:
        return result(_refused(reply, credentials, host))
    findings = [
        Finding("credentials", True, f"accepted: the server verified the UserSig of {admin}"),
        Finding("admin", True, f"accepted: {admin} is an App admin"),
        Finding("region", True, f"right: {host} knows SDKAppID {credentials.sdkappid}"),
    ]
    facts = account_check.parse(doc, first)
    admin_fact = facts[0]
    if not admin_fact.exists:
        findings.append(Finding("admin", None, f"account_check says {admin} is not imported; it is accepted as admin"))

    async def accounts_of(chunk: Sequence[str]) -> list[AccountFact]:
        reply, doc = await caller.call(account_check.PATH, account_check.body(chunk))
        if reply.error_code != rules.OK:
            findings.append(_unread("senders", reply))
            return []
        return account_check.parse(doc, chunk)

    async def groups_of(chunk: Sequence[str]) -> list[GroupFact]:
        reply, doc = await caller.call(group_info.PATH, group_info.body(chunk))
        if reply.error_code != rules.OK:
            findings.append(_unread("groups", reply))
            return []
        return group_info.parse(doc, chunk)

    rest = accounts[account_check.MAX_ACCOUNTS :]
    account_chunks = [rest[i : i + account_check.MAX_ACCOUNTS] for i in range(0, len(rest), account_check.MAX_ACCOUNTS)]
    group_chunks = [
        jobs.groups[i : i + group_info.MAX_GROUPS] for i in range(0, len(jobs.groups), group_info.MAX_GROUPS)
    ]
    async with asyncio.TaskGroup() as tasks:
        account_tasks = [tasks.create_task(accounts_of(chunk)) for chunk in account_chunks]
        group_tasks = [tasks.create_task(groups_of(chunk)) for chunk in group_chunks]
    senders = [f for f in facts[1:]] + [f for t in account_tasks for f in t.result()]
    if admin in jobs.senders:
        senders.insert(0, admin_fact)
    groups = [g for t in group_tasks for g in t.result()]
    return result(findings, groups, senders)


def _refused(reply: Reply, credentials: Credentials, host: str) -> list[Finding]:
    """The findings of a first request that did not pass: what a send's first request would meet."""
    code = reply.error_code
    admin = credentials.identifier
    unknown = "not known: the first request did not pass"
    if code is None:
        if reply.connect_failed:
            text = f"unreachable: {reply.error_info}"
        elif reply.http_status is None:
            text = f"no reply: {reply.error_info}"
        elif reply.http_status == 200:
            text = f"{host} answered, but not as Tencent's IM REST API does: {reply.error_info}"
        else:
            text = f"{host} answered HTTP {reply.http_status}: not Tencent's IM REST API (a wrong --endpoint?)"
        return [
            Finding("endpoint", False, text, stops_a_run=True),
            Finding("credentials", None, unknown),
            Finding("admin", None, unknown),
            Finding("region", None, unknown),
        ]
    said = f"{code} ({codes.meaning(code)})"
    if code == rules.SDKAPPID_NOT_FOUND:
        text = (
            f"wrong: {host} does not know SDKAppID {credentials.sdkappid} ({code}): a wrong SDKAppID, or another region"
        )
        return [
            Finding("credentials", None, unknown),
            Finding("admin", None, unknown),
            Finding("region", False, text, stops_a_run=True),
        ]
    if code in ADMIN_CODES:
        # Operators have seen 60010 from a host of another region too: the region is not vouched for.
        return [
            Finding("credentials", None, unknown),
            Finding("admin", False, f"refused: {admin} is not accepted as an App admin: {said}", stops_a_run=True),
            Finding("region", None, f"not known: a host of another region may answer {code} too"),
        ]
    if code in SIGNATURE_CODES:
        return [
            Finding("credentials", False, f"refused: {said}", stops_a_run=True),
            Finding("admin", None, unknown),
            Finding("region", None, unknown),
        ]
    return [Finding("endpoint", False, f"{host} refused the request: {said}", stops_a_run=True)]


def _unread(what: str, reply: Reply) -> Finding:
    """A later request that did not pass: what it was to read stays unknown, and that stops a check."""
    said = reply.error_info if reply.error_code is None else f"{reply.error_code} ({codes.meaning(reply.error_code)})"
    return Finding(what, False, f"could not be read: {said}", stops_a_run=True)


class _Caller:
    """Sends the check's requests, each after its slot of the rate; repeats one the server asks to
    repeat, and renews a UserSig it says expired."""

    def __init__(self, client: Client, signer: Signer, limiter: Limiter, in_flight: int) -> None:
        self._client = client
        # A slot of the rate is taken only by a request that can leave at once: one that waited
        # for a connection after its slot would start later than paced, bunched with the next.
        self._in_flight = asyncio.Semaphore(in_flight)
        self._signer = signer
        self._limiter = limiter
        self.requests = 0
        self.failed_over: str | None = None  # why a request went to the backup endpoint, if one did

    async def call(self, path: str, body: bytes) -> tuple[Reply, dict[str, object]]:
        for attempt in range(1, ATTEMPTS + 1):
            async with self._in_flight:
                await self._limiter.acquire()
                self.requests += 1
                reply, doc = await self._client.call(path, body)
            verdict = rules.classify(reply.error_code, reply.http_status)
            if attempt == ATTEMPTS:
                break
            if verdict is rules.Verdict.RENEW and self._signer.can_renew:
                self._signer.renew()
                continue
            # The server asked for a repeat (10002, 60007, ...). A transport fault is not repeated:
            # the check says what it met, at once.
            if verdict is rules.Verdict.RETRY and reply.error_code is not None:
                continue
            if reply.failed_over:  # nothing was sent: the next try goes to the backup, as a send's does
                self.failed_over = self.failed_over or reply.error_info
                continue
            break
        return reply, doc
