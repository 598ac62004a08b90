"""The seam between the engine and one REST API: what a job of it may say, the request a batch
becomes, and what its reply means: the client's half only.

The engine, the reader, the journal and the report know only this interface; each API is one
module (`notification`, `batchsendmsg`, `groupmsg`) and one line of the registry (`__init__`).
Adding an API is one new module and one registry line here, and its emulation one module and one
line of `EMULATORS` in dispatcher.sandbox.apis (which imports this; this never imports it).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import orjson

from dispatcher.tim import rules

# Message element types the REST APIs take in a MsgBody (Tencent's "Message Formats" page).
MSG_TYPES: Final = frozenset(
    {
        "TIMTextElem",
        "TIMCustomElem",
        "TIMLocationElem",
        "TIMFaceElem",
        "TIMSoundElem",
        "TIMImageElem",
        "TIMFileElem",
        "TIMVideoFileElem",
    }
)


# A job's fields that say how its recipients_file is read and what it leaves out (dispatcher.jobs.sources);
# every API that takes recipients knows them, right after recipients_file.
EXPORT_KEYS: Final = (
    "recipients_column",
    "recipients_format",
    "exclude_file",
    "exclude_column",
    "exclude_format",
    # A query as the audience (dispatcher.jobs.query): in place of recipients_file or exclude_file.
    "recipients_query",
    "recipients_database",
    "exclude_query",
    "exclude_database",
)


class Reject(Exception):
    """A job that must not be sent: the field at fault and why."""

    # 1: the job is at fault. 2: what it names cannot be had now (an object store that cannot be read): the
    # other jobs go, and the run exits 2, as for any fault of its environment.
    exit_code = 1

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What a job of an API says, besides its recipients: validated, ready to be sent.

    `fields` are the request's own fields that every batch of the job carries unchanged (for
    notifications the engine builds the body itself, exactly as before the seam).
    """

    group_id: str | None  # shown in the journal and the report; None for one-to-one messages
    fields: Mapping[str, object]
    content: str = ""  # notifications only
    topic_id: str | None = None
    group_type: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Details:
    """What a reply says beyond its ErrorCode."""

    failures: tuple[tuple[str, int], ...] = ()  # recipients not delivered to, with the code of each
    dropped: str = ""  # MsgDropReason: the server dropped the message although ErrorCode was 0
    task_id: str = ""  # the Push Service's TaskId: what its console and delivery reports know the push by


NO_DETAILS: Final = Details()


class Endpoint(abc.ABC):
    """One REST API, as the dispatcher drives it."""

    name: ClassVar[str]  # the job's "api" value
    path: ClassVar[str]  # e.g. /v4/openim/batchsendmsg
    keys: ClassVar[tuple[str, ...]]  # job keys it knows (job_id and api included)
    # Keys a job may not give, and why: request fields the dispatcher sets itself, and keys that
    # would have another API send to someone else (answered without a "did you mean").
    reserved: ClassVar[dict[str, str]] = {}
    recipients_key: ClassVar[str | None]  # the job field that lists recipients inline; None: it takes none
    recipients_required: ClassVar[bool] = False  # False: a job without recipients reaches all members
    # Recipients count against a per-minute message quota (one call to 500 accounts is 500 messages).
    counts_recipients: ClassVar[bool] = False
    # The window of that quota, seconds (None: the API has no message quota).
    quota_seconds: ClassVar[float | None] = None
    # Calls in a window, counted per call and held by the limiter's guard alone, no even pace (timpush_push:
    # 100 calls a day); None: no such budget.
    call_quota: ClassVar[tuple[int, float] | None] = None
    # Its requests name no group: the report says "one-to-one" where others name the GroupId.
    one_to_one: ClassVar[bool] = False
    # The request carries a message number (Random, MsgRandom): see `batch_random`.
    takes_random: ClassVar[bool] = True
    # Messages a second into one group (the job's GroupId) before the server drops them; None: no such limit.
    group_rate: ClassVar[float | None] = None
    # Calls a second Tencent documents for the API, for an app without an add-on pack (each page's
    # "request frequency limit": 200 for the three message APIs). A --rate above it is warned about,
    # and the pace ramps up to it from here (dispatcher.pacing.adaptive); apps can buy more.
    documented_rate: ClassVar[float] = rules.DEFAULT_RATE
    # The pace of its own, calls a second, when the API is not at --rate's 200 (the Push Service's 30):
    # None paces it at --rate. `--api-rate NAME=N` sets either.
    default_rate: ClassVar[float | None] = None
    # The most calls a second any app may make, whatever it buys (a push to all users: one a second); None:
    # no such bound. `--api-rate` above it is refused.
    max_rate: ClassVar[float | None] = None
    transient_codes: ClassVar[frozenset[int]] = frozenset()  # codes to retry besides rules.classify's
    over_rate_codes: ClassVar[frozenset[int]] = frozenset()  # "too frequent" codes besides api's
    # False: a request whose reply never came (it may have been delivered) is recorded `unknown` and
    # never sent again on its own (a push to all users, once shown, cannot be unseen); only --retry-unknown does.
    resends_unsure: ClassVar[bool] = True
    # Its journal lines and rejections carry "api" (a notification's keep the keys they had before
    # the other APIs existed, so that journals of then and now read alike).
    names_api: ClassVar[bool] = True

    @abc.abstractmethod
    def validate(self, doc: Mapping[str, Any]) -> Spec:
        """Check the job's fields other than its recipients; raise Reject."""

    def check_recipients(self, spec: Spec, doc: Mapping[str, Any], named: bool) -> None:
        """Rules that tie the recipients to the rest of the job (AVChatRoom: all members only)."""
        return None

    def hasher(self, spec: Spec, batch_size: int, all_members: bool) -> hashlib.blake2b:
        """The start of the job hash; the recipients are fed to it after."""
        head = [self.name, dict(spec.fields), all_members, batch_size]
        return hashlib.blake2b(orjson.dumps(head, option=orjson.OPT_SORT_KEYS), digest_size=16)

    def derived_id(self, spec: Spec, recipients: object) -> str:
        """The job_id of a job that gives none: from what decides what is sent, never its place."""
        return "auto-" + hashlib.blake2b(self.derived_doc(spec, recipients), digest_size=8).hexdigest()

    def derived_doc(self, spec: Spec, recipients: object) -> bytes:
        """What `derived_id` hashes (its own seam, so that recipients read as a stream hash alike)."""
        return orjson.dumps([self.name, dict(spec.fields), recipients], option=orjson.OPT_SORT_KEYS)

    @abc.abstractmethod
    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        """The request body of one batch. `random` is the batch's stable number (see `batch_random`)."""

    def details(self, doc: Mapping[str, Any]) -> Details:
        """Per-recipient failures and drops in a reply that has an ErrorCode."""
        return NO_DETAILS

    def classify(self, error_code: int | None, http_status: int | None, details: Details) -> rules.Verdict:
        if error_code == rules.OK and details.dropped:
            return rules.Verdict.RETRY  # frequency control dropped it: nothing was delivered
        if error_code is not None and (error_code in self.transient_codes or error_code in self.over_rate_codes):
            return rules.Verdict.RETRY
        return rules.classify(error_code, http_status)

    def config_hint(self, error_code: int | None) -> str:
        """What to fix when `error_code` stops the run as a configuration error."""
        return "check credentials and region"

    def too_frequent(self, error_code: int | None) -> bool:
        """True when a reply's ErrorCode says this API was called too often (60007, 60011, 10006,
        10023, and the API's own): the pace steps down. A per-recipient code of an ErrorList does
        not: it is about that account, and a group's MsgDropReason is about that group's pace."""
        return error_code is not None and (error_code in rules.OVER_RATE_CODES or error_code in self.over_rate_codes)

    def recipient_transient(self, code: int) -> bool:
        """True when a recipient's failure in an ErrorList may clear on a retry: a code retried for a
        whole request (transient or "too frequent") is no more final for one account."""
        return (
            code in self.transient_codes
            or code in self.over_rate_codes
            or code in rules.TRANSIENT_CODES
            or code in rules.OVER_RATE_CODES
        )


def error_list(doc: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """The accounts a reply's `ErrorList` names as not delivered to, with the code of each (-1: none
    given). An account listed with code 0 is left out: taken for a failure, --retry-failed would
    resend it."""
    errors = doc.get("ErrorList")
    if not isinstance(errors, list):
        return ()
    failures = []
    for item in errors:
        if isinstance(item, dict) and isinstance(item.get("To_Account"), str):
            code = item.get("ErrorCode")
            if type(code) is int and code == rules.OK:
                continue
            failures.append((item["To_Account"], code if type(code) is int else -1))
    return tuple(failures)


def batch_random(job_id: str, job_hash: str, index: int) -> int:
    """A batch's Random/MsgRandom: the same for every attempt of it, in this run and on a resume,
    and different for every batch and job (a uint32 from the job_id, the job hash and the batch
    number). The job_id is in it so that two jobs that send the same message to the same group on
    purpose (each with a job_id of its own) are not taken by the server for one."""
    digest = hashlib.blake2b(orjson.dumps([job_id, job_hash, index]), digest_size=4).digest()
    return int.from_bytes(digest, "big")


# -- validation helpers shared by the message APIs ------------------------------------------------


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__.replace("str", "string").replace("dict", "object")


def string(doc: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    if key not in doc:
        if required:
            raise Reject(key, "is required")
        return None
    value = doc[key]
    if not isinstance(value, str):
        raise Reject(key, f"must be a string, not {type_name(value)}")
    if not value:
        raise Reject(key, "must not be empty")
    return value


def group_id(doc: Mapping[str, Any]) -> str:
    """The job's GroupId: required, and one the server takes."""
    gid = string(doc, "GroupId", required=True)
    assert gid is not None
    problem = rules.group_id_problem(gid)
    if problem:
        raise Reject("GroupId", problem)
    return gid


def integer(doc: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in doc:
        return None
    value = doc[key]
    if type(value) is not int:
        raise Reject(key, f"must be a whole number, not {type_name(value)}")
    if not low <= value <= high:
        raise Reject(key, f"must be from {low} to {high:,}")
    return value


def msg_body_problem(value: object) -> str | None:
    """Why `value` is not a MsgBody the APIs take, or None."""
    if not isinstance(value, list):
        return f"must be an array of message elements, not {type_name(value)}"
    if not value:
        return "must hold at least one message element"
    for i, elem in enumerate(value):
        if not isinstance(elem, dict) or set(elem) != {"MsgType", "MsgContent"}:
            return f"item {i}: must be an object with exactly MsgType and MsgContent"
        kind, content = elem["MsgType"], elem["MsgContent"]
        if kind not in MSG_TYPES:
            return f"item {i}: MsgType must be one of {', '.join(sorted(MSG_TYPES))}"
        if not isinstance(content, dict):
            return f"item {i}: MsgContent must be an object"
        if kind == "TIMTextElem" and not isinstance(content.get("Text"), str):
            return f"item {i}: a TIMTextElem needs Text, a string"
        if kind == "TIMCustomElem":
            for key in ("Data", "Desc", "Ext"):
                if key in content and not isinstance(content[key], str):
                    return f"item {i}: a TIMCustomElem's {key} must be a string"
            if "Data" not in content:
                return f"item {i}: a TIMCustomElem needs Data, a string"
    size = len(orjson.dumps(value))
    if size > rules.MAX_CONTENT_BYTES:
        return f"is {size:,} bytes as JSON; at most {rules.MAX_CONTENT_BYTES:,} bytes can be sent"
    return None


def message_body(doc: Mapping[str, Any]) -> list[Any]:
    """The job's MsgBody, or one TIMTextElem from the `Text` convenience; exactly one of them."""
    if "MsgBody" in doc and "Text" in doc:
        raise Reject("Text", "cannot be given together with MsgBody")
    if "Text" in doc:
        text = string(doc, "Text")
        assert text is not None
        body: list[Any] = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]
        problem = msg_body_problem(body)
        if problem:
            raise Reject("Text", problem.replace("as JSON", "as a TIMTextElem"))
        return body
    if "MsgBody" not in doc:
        raise Reject("MsgBody", "is required (or Text, for a body of one TIMTextElem)")
    problem = msg_body_problem(doc["MsgBody"])
    if problem:
        raise Reject("MsgBody", problem)
    for i, elem in enumerate(doc["MsgBody"]):
        # Refused before sending, as an empty `Text` is (the sandbox takes what the page allows): it is a
        # blank message to every recipient, a template that filled in nothing.
        if elem["MsgType"] == "TIMTextElem" and not elem["MsgContent"]["Text"]:
            raise Reject("MsgBody", f"item {i}: a TIMTextElem needs Text, a non-empty string")
    return list(doc["MsgBody"])


def common_message_fields(doc: Mapping[str, Any], fields: dict[str, object]) -> None:
    """The optional fields both message APIs take, checked and copied into `fields`."""
    sender = string(doc, "From_Account")
    if sender is not None:
        problem = rules.user_id_problem(sender)
        if problem:
            raise Reject("From_Account", f"UserID {problem}")
        fields["From_Account"] = sender
    data = string(doc, "CloudCustomData")
    if data is not None:
        fields["CloudCustomData"] = data
    if "SendMsgControl" in doc:
        control = doc["SendMsgControl"]
        if not (isinstance(control, list) and all(isinstance(c, str) and c for c in control)):
            raise Reject("SendMsgControl", "must be an array of strings, as NoUnread, NoLastMsg, WithMuteNotifications")
        fields["SendMsgControl"] = control
    if "OfflinePushInfo" in doc:
        push = doc["OfflinePushInfo"]
        if not isinstance(push, dict):
            raise Reject("OfflinePushInfo", f"must be an object, not {type_name(push)}")
        fields["OfflinePushInfo"] = push
