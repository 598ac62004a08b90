"""`v4/timpush/batch`: the Push Service's push to up to 500 named accounts per call (Tencent's
document 67553, "UserID-targeted push"), through the vendors' channels (APNs, FCM, Huawei, ...).

Its rate is its own, by the app's edition: 10 calls a second on the free edition, 30 on standard,
40 on advanced. The dispatcher paces it at the standard edition's 30 unless `--api-rate
timpush_batch=N` says otherwise; `--rate` (200 for the message APIs) does not change it.

Its reply is partial, as batchsendmsg's is: an `ErrorList` of the accounts not pushed to (70107:
the account does not exist), and a `TaskId` that Tencent's console and delivery reports know the
push by, kept on the batch's journal line. `MsgRandom` comes from the job, the batch and the
accounts a request names (`msg_random`): the same on every resend, never the same for two batches.
Tencent says the server drops a repeat "within the same second" only, so a resend after a timeout
may still push twice, as batchsendmsg may.

90045 (the Push Service is not enabled for the app) and 90009 (the identifier is not an admin)
stop the run: every request would fail alike, and a plain --resume finishes it once fixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import EXPORT_KEYS, Details, Endpoint, Reject, Spec, error_list, string, type_name

NAME: Final = "timpush_batch"
PATH: Final = "/v4/timpush/batch"
# Calls a second by the app's edition (document 67553); the standard edition's is the default pace.
EDITION_RATES: Final = {"free": 10, "standard": 30, "advanced": 40}
DEFAULT_RATE: Final = EDITION_RATES["standard"]
MAX_DATA_ID_BYTES: Final = 64

JSON_ERROR: Final = 90001  # the JSON, or a field of it, is invalid
BAD_MSG_RANDOM: Final = 90005
ADMIN_REQUIRED: Final = 90009
TOO_MANY_ACCOUNTS: Final = 90018
NOT_ENABLED: Final = 90045  # the Push Service is not enabled for the app
DATA_ID_TOO_LONG: Final = 90057  # not in Tencent's error table; the issue's and the notes' code
INTERNAL: Final = 91000  # internal error: retry
ACCOUNT_NOT_FOUND: Final = 70107  # one account, in an ErrorList
# The text fields of OfflinePushInfo, one of which a push must carry: a push with none shows nothing.
PUSH_TEXTS: Final = ("Title", "Desc", "Ext")

NOT_A_MESSAGE: Final = (
    f"{NAME} sends a push notification (OfflinePushInfo), not a message; "
    'to send a message to named accounts, use "api": "batchsendmsg"'
)
NO_GROUP: Final = f"{NAME} pushes to the accounts in To_Account and takes no group"
NO_AUDIENCE: Final = (
    f'{NAME} pushes to the accounts in To_Account only; to push to all users or by tag, use "api": "timpush_push"'
)


def offline_push_info(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The job's OfflinePushInfo: required, an object whose documented fields have their types, and
    with a Title, Desc or Ext to show. Vendor fields (AndroidInfo, ApnsInfo, ...) pass as objects."""
    if "OfflinePushInfo" not in doc:
        raise Reject("OfflinePushInfo", "is required: the push's PushFlag, Title, Desc and Ext")
    push = doc["OfflinePushInfo"]
    if not isinstance(push, dict):
        raise Reject("OfflinePushInfo", f"must be an object, not {type_name(push)}")
    flag = push.get("PushFlag", 0)
    if type(flag) is not int or flag not in (0, 1):
        raise Reject("OfflinePushInfo", "PushFlag must be 0 (push) or 1 (no offline push)")
    for key in PUSH_TEXTS:
        if key in push and not isinstance(push[key], str):
            raise Reject("OfflinePushInfo", f"{key} must be a string, not {type_name(push[key])}")
    if not any(push.get(key) for key in PUSH_TEXTS):
        raise Reject("OfflinePushInfo", "needs a Title, Desc or Ext that is not empty: a push with none shows nothing")
    for key, value in push.items():
        if key.endswith("Info") and not isinstance(value, dict):
            raise Reject("OfflinePushInfo", f"{key} must be an object, not {type_name(value)}")
    return dict(push)


def push_fields(doc: Mapping[str, Any]) -> dict[str, object]:
    """The fields both push APIs take: From_Account (required), OfflinePushInfo, and DataId."""
    sender = string(doc, "From_Account", required=True)
    assert sender is not None
    problem = rules.user_id_problem(sender)
    if problem:
        raise Reject("From_Account", f"UserID {problem}")
    fields: dict[str, object] = {"From_Account": sender, "OfflinePushInfo": offline_push_info(doc)}
    data_id = string(doc, "DataId")
    if data_id is not None:
        size = len(data_id.encode("utf-8", "surrogatepass"))
        if size > MAX_DATA_ID_BYTES:
            raise Reject("DataId", f"is {size} bytes; at most {MAX_DATA_ID_BYTES} bytes (UTF-8) can be sent")
        fields["DataId"] = data_id
    return fields


def msg_random(random: int, recipients: Sequence[str]) -> int:
    """The MsgRandom of a request: from the batch's number and the accounts it names. A resend of
    the same request carries the same one, so the server can drop it; a retry of only the accounts a
    partial reply left names others, so it carries another (with the batch's own, the server would
    drop it as the same push within the second, and those accounts would be recorded ok, never pushed)."""
    digest = hashlib.blake2b(random.to_bytes(4, "big"), digest_size=4)
    for uid in recipients:
        digest.update(uid.encode("utf-8", "surrogatepass") + b"\n")
    return int.from_bytes(digest.digest(), "big")


def task_id(doc: Mapping[str, Any]) -> str:
    value = doc.get("TaskId")
    return value if isinstance(value, str) else ""


class TimPushBatch(Endpoint):
    name = NAME
    path = PATH
    keys = ("api", "job_id", "To_Account", "recipients_file", *EXPORT_KEYS, "From_Account", "OfflinePushInfo", "DataId")
    reserved: ClassVar[dict[str, str]] = {
        "MsgRandom": "is set by the dispatcher, one per batch; leave it out",
        **dict.fromkeys(("MsgBody", "Text"), NOT_A_MESSAGE),
        **dict.fromkeys(("GroupId", "TopicId"), NO_GROUP),
        **dict.fromkeys(("audience", "Condition"), NO_AUDIENCE),
    }
    recipients_key = "To_Account"
    recipients_required = True
    counts_recipients = True  # an ErrorList names the accounts not pushed to: each recipient's fate is kept
    one_to_one = True
    documented_rate: ClassVar[float] = DEFAULT_RATE
    default_rate: ClassVar[float | None] = DEFAULT_RATE
    transient_codes: ClassVar[frozenset[int]] = frozenset({INTERNAL})

    def validate(self, doc: Mapping[str, Any]) -> Spec:
        return Spec(None, push_fields(doc))

    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        return orjson.dumps({**fields, "To_Account": recipients, "MsgRandom": msg_random(random, recipients or ())})

    def details(self, doc: Mapping[str, Any]) -> Details:
        return Details(failures=error_list(doc), task_id=task_id(doc))

    def config_hint(self, error_code: int | None) -> str:
        if error_code == NOT_ENABLED:
            return "enable the Push Service for this app in Tencent's console (Push Service, then Activate)"
        return super().config_hint(error_code)

    def classify(self, error_code: int | None, http_status: int | None, details: Details) -> rules.Verdict:
        if error_code in (ADMIN_REQUIRED, NOT_ENABLED):
            return rules.Verdict.CONFIG  # every request would fail alike
        return super().classify(error_code, http_status, details)
