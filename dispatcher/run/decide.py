"""One reply, one decision: what a request's reply means for its batch, with no side effects.

`decide` is a pure function of the reply, what the request sent and the run's policy. It returns
the batch's status for the journal, the recipients delivered and those left, what the next attempt
sends, and what the engine must do besides (renew the UserSig, pause every start, stop the run).
The engine then writes the journal line and emits the event in one synchronous step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dispatcher.core.status import FAILED, OK, RETRY, UNKNOWN, code_key
from dispatcher.run.client import Reply
from dispatcher.run.retry import RetryPolicy
from dispatcher.tim import rules
from dispatcher.tim.apis import Endpoint

Verdict = rules.Verdict
# A Retry-After longer than this is cut to it, so that one odd header cannot park a run for a day.
MAX_RETRY_AFTER = 300.0
_NOTHING_LOST: Mapping[str, int | None] = {}

# A server's Date has a precision of a second, and a reply takes some time to arrive: a clock off
# by less than this is not named as the cause of a refused signature.
CLOCK_SKEW_SHOWN = 5.0
# The signature and account errors: a reply with one of these says nothing of the UserSig being good.
_SIGNATURE_CODES = range(70_000, 71_000)


def duration_text(seconds: float) -> str:
    """How far apart two clocks are, as a person reads it: "3 days (259,200 s)", "42 s"."""
    whole = round(seconds)
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if whole >= size:
            return f"{whole / size:.1f}".removesuffix(".0") + f" {unit} ({whole:,} s)"
    return f"{whole} s"


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """What one request sent: its recipients (None: all members, or a group message), and the
    batch's recipients that failed for good before it (by a partial reply), with their codes."""

    recipients: tuple[str, ...] | None
    lost: Mapping[str, int | None] = dataclasses.field(default_factory=dict)
    signed: int = 0  # the signer's generation when it was sent: which UserSig it went out with


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureUse:
    """What the request's UserSig was, against the signer's now."""

    current: bool = True  # it is still the signer's UserSig (no renewal since it was sent)
    made_on_refusal: bool = False  # it was made because the one before it was refused (70001)
    accepted: bool = False  # the server took it, or a later one, for a request before (see `took_signature`)
    now: float = 0.0  # this host's wall clock, seconds since the epoch (for a clock that is off)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What a reply means. `status` is the journal line's; `again` says whether the batch is sent
    again, `pending` what that attempt sends and `backoff` whether the policy's backoff comes first
    (a renewal retries at once; a pause waits in the limiter with every other worker)."""

    status: str
    again: bool
    backoff: bool
    code: str  # the reply's key in `error_codes`
    pending: tuple[str, ...] | None
    lost: Mapping[str, int | None]  # the batch's recipients failed for good, with their last codes
    delivered: int  # named recipients this reply delivered to
    undelivered: int  # recipients this line leaves undelivered for good (a `failed` line)
    extra: Mapping[str, object]  # journal keys beyond the common ones
    renew: bool = False  # make a new UserSig before the next request
    pause: float = 0.0  # hold every start this many seconds
    signature_pause: bool = False  # the pause is 70050's (signature checks rate-limited)
    halt: str | None = None  # stop the run: unfinished work stays resumable
    signature_accepted: bool = False  # the server took the request's UserSig (see `took_signature`)


def decide(
    reply: Reply,
    verdict: Verdict,
    endpoint: Endpoint,
    sent: Sent,
    *,
    batch_recipients: int,
    last: bool,
    can_renew: bool,
    policy: RetryPolicy,
    target: str,
    outage: str | None = None,
    signature: SignatureUse = SignatureUse(),
) -> Decision:
    """The decision for `reply`, whose endpoint classified it as `verdict`.

    `batch_recipients` is how many recipients the batch names (0: all members, or a group
    message); `last` is true on the batch's last allowed attempt; `can_renew` whether the signer
    can make a new UserSig; `target` the endpoint's URL, for messages; `outage` the reason to stop
    the run that the transport faults so far give, if any (see `health`); `signature` what the
    request's UserSig was."""
    details = reply.details
    code = code_key(reply.error_code)
    if reply.error_code == rules.OK and details.dropped:
        code = "0-dropped"  # not a delivery: frequency control dropped the message
    recipients = sent.recipients
    sent_count = len(recipients) if recipients is not None else 0
    # Recipients a partial reply names as not delivered: those that may clear on a retry, the rest
    # failed for good. Only recipients of this request count (a server could name others).
    failures: dict[str, int] = {}
    if details.failures and recipients:  # most replies name none: no set of 500 names is built for them
        asked = set(recipients)
        failures = {uid: c for uid, c in details.failures if uid in asked}
    # A reply that says, recipient by recipient, why each was not delivered is judged per recipient,
    # also when none was (an ErrorCode of its own, 90012 or a transient one, with an ErrorList
    # naming them all): retried whole, it would send again to accounts that failed for good.
    per_recipient = bool(failures) and (
        verdict is Verdict.OK or (verdict in (Verdict.PERMANENT, Verdict.RETRY) and len(failures) == sent_count)
    )
    retry_some: tuple[str, ...] = ()
    if per_recipient:
        verdict = Verdict.OK
        retry_some = tuple(uid for uid, c in failures.items() if endpoint.recipient_transient(c))
    again = backoff = renew = signature_pause = False
    pause = 0.0
    halt = outage
    if not endpoint.resends_unsure and may_have_arrived(reply):
        status = UNKNOWN  # never sent again on its own: it may have been delivered (a push shown cannot be unseen)
    elif halt is not None:
        status = RETRY  # not final: a plain --resume finishes the run once the endpoint answers
    elif verdict is Verdict.OK:
        status = OK if not failures and not sent.lost else FAILED
        if retry_some and not last:
            status, again, backoff = RETRY, True, True  # back off: these failures are the server's, like 10002
    elif verdict is Verdict.PERMANENT:
        status = FAILED
    elif verdict is Verdict.CONFIG:
        status = RETRY  # not final: a plain --resume finishes the run once the configuration is fixed
        if reply.error_code is None:
            halt = f"{reply.error_info} from {target}; check --endpoint or --region"
        else:
            halt = f"the server answered {code} ({reply.error_info}); {endpoint.config_hint(reply.error_code)}"
    elif verdict is Verdict.RENEW and not can_renew:
        status = RETRY
        halt = "the UserSig in TIM_USERSIG has expired; set TIM_SECRET_KEY or a fresh TIM_USERSIG"
    elif verdict is Verdict.RENEW and signature.made_on_refusal and not signature.accepted:
        # The signature made because the last one was refused is refused too, before the server took
        # it once: no renewal can help, every request would be refused alike (a clock that is off).
        # One the server took, then refused, has simply expired: it is renewed like any other.
        # Not final: a plain --resume finishes once the clock is right.
        status = RETRY
        halt = fresh_signature_refused(reply, signature.now)
    else:
        if verdict is Verdict.RENEW:
            # Renewed once for all the requests signed with the refused UserSig; then retried at once.
            renew = signature.current
        elif verdict is Verdict.PAUSE:
            pause, signature_pause = policy.signature_pause, True
        elif reply.retry_after is not None:
            # The server said when to come back: every worker waits that long, not just this one.
            pause = min(reply.retry_after, MAX_RETRY_AFTER)
        else:
            backoff = True
        again = not last
        status = RETRY if again else FAILED
    extra: dict[str, object] = {}
    if endpoint.names_api:  # lines of notifications keep the keys they always had
        extra["api"] = endpoint.name
    if details.dropped:
        extra["msg_drop_reason"] = details.dropped
    if details.task_id:  # the Push Service's name for the push: its console and delivery reports know it
        extra["task_id"] = details.task_id
    # What is left of the batch after this request, for the journal (and so for a resume and the
    # report): every recipient not delivered to, with its last code, and what to send next.
    lost = sent.lost
    delivered = 0
    pending = recipients
    if endpoint.counts_recipients and recipients is not None:
        lost = dict(sent.lost)
        if per_recipient or (reply.error_code == rules.OK and not details.dropped):
            delivered = sent_count - len(failures)
            if again:
                pending = retry_some
                lost.update({uid: c for uid, c in failures.items() if uid not in retry_some})
            else:
                lost.update(failures)
        elif status == FAILED:
            lost.update({uid: failures.get(uid, reply.error_code) for uid in recipients})
        if status != OK:
            errors = dict(lost)
            if status == RETRY:
                errors.update({uid: failures.get(uid, reply.error_code) for uid in pending or ()})
            extra["recipient_errors"] = errors
            if status == RETRY:
                extra["resend"] = pending
    elif status == OK:
        delivered = batch_recipients
    undelivered = 0
    if status == FAILED:  # recipients of the batch that this line leaves undelivered for good
        undelivered = len(lost) if endpoint.counts_recipients else batch_recipients
    return Decision(
        status=status,
        again=again,
        backoff=backoff,
        code=code,
        pending=pending,
        lost=lost if lost else _NOTHING_LOST,
        delivered=delivered,
        undelivered=undelivered,
        extra=extra,
        renew=renew,
        pause=pause,
        signature_pause=signature_pause,
        halt=halt,
        signature_accepted=took_signature(reply, verdict),
    )


def may_have_arrived(reply: Reply) -> bool:
    """Whether a reply with no ErrorCode leaves it open that the server took the request: a timeout,
    a connection dropped after the request left, an HTTP 5xx or a body that is not JSON. A connection
    never made, a 429 (refused before it was read) and another HTTP status (the wrong place, or the
    request's own size) say it was not."""
    if reply.error_code is not None or reply.connect_failed:
        return False
    return reply.http_status is None or reply.http_status == 200 or reply.http_status >= 500


def took_signature(reply: Reply, verdict: Verdict) -> bool:
    """Whether the reply shows the server took the request's UserSig: it answered about the request
    itself, delivered or refused for its content. A transport fault, an over-rate or transient reply
    (which may come before the signature is checked) and any 70xxx code (the signature and account
    errors) say nothing of it."""
    code = reply.error_code
    return code is not None and verdict in (Verdict.OK, Verdict.PERMANENT) and code not in _SIGNATURE_CODES


def fresh_signature_refused(reply: Reply, now: float) -> str:
    """Why the run stops when a UserSig made just now is refused as expired: this host's clock
    against the server's Date header, when they differ by more than the header's precision."""
    server = reply.server_time
    offset = None if server is None else server - now
    if offset is None or abs(offset) < CLOCK_SKEW_SHOWN:
        clocks = (
            "the server sent no Date to compare the clocks with"
            if offset is None
            else f"its Date agrees with this host's clock (within {CLOCK_SKEW_SHOWN:g} s)"
        )
        return (
            f"the server refused a UserSig made just now ({reply.error_code}: {reply.error_info}), right after "
            f"renewing one it had refused; {clocks}: check the credentials and the time where they are checked"
        )
    side = "behind" if offset > 0 else "ahead of"
    return (
        f"this host's clock is {duration_text(abs(offset))} {side} the server's (its Date: {reply.date}): "
        f"every UserSig made here is refused as expired ({reply.error_code}), also right after renewing it; "
        "set the clock right (NTP)"
    )
