"""What each ErrorCode means, in a few words an operator reads in a report: the one table that the
report, its page and its CSV take meanings from.

The meanings are Tencent's, from its error code pages and each API's page (the reference's section 1
says what the dispatcher does about each). A code not here is shown as "see Tencent's error codes",
never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

TRANSPORT: Final = "transport"  # no ErrorCode: the key the summary and the metrics count such replies by
DROPPED: Final = "0-dropped"  # ErrorCode 0 with a MsgDropReason: frequency control dropped the message
UNKNOWN: Final = "see Tencent's error codes"

MEANINGS: Final[Mapping[str, str]] = {
    "0": "delivered",
    DROPPED: "dropped by the group's frequency control: MsgDropReason",
    TRANSPORT: "no reply: connection error, timeout, HTTP 5xx or 429, or a body that is not JSON",
    # Shared by every REST API.
    "10002": "internal server error, retried",
    "10003": "invalid request command",
    "10004": "invalid parameter",
    "10006": "group operations too frequent",
    "10007": "no permission for this operation",
    "10010": "the group does not exist, or was disbanded",
    "10015": "invalid GroupId",
    "10016": "refused by the app's callback",
    "10017": "the sender is muted",
    "10023": "group messages too frequent",
    "60004": "request parameter error",
    "60007": "REST calls too frequent: over the app's rate",
    "60008": "the service timed out, retried",
    "60010": "the identifier is not an App admin",
    "60011": "the app's requests too frequent",
    "60018": "requests too frequent",
    "60019": "requests too frequent",
    "70001": "UserSig expired",
    "70003": "UserSig invalid: a wrong secret key?",
    "70009": "UserSig verification failed: a wrong key or account?",
    "70013": "the UserSig's identifier is not the request's",
    "70014": "the UserSig's SDKAppID is not the request's",
    "70016": "no key for this SDKAppID: a wrong secret key?",
    "70020": "SDKAppID not found: a wrong SDKAppID or region?",
    "70050": "signature failures rate-limited",
    "70107": "the account does not exist, never imported",
    "70169": "internal server error, retried",
    "70202": "internal server error, retried",
    "70402": "invalid parameter (account APIs)",
    "70500": "internal server error, retried",
    "80001": "the message holds sensitive words",
    "80002": "the message is too long",
    # batchsendmsg.
    "90001": "the request's JSON or a field of it is invalid",
    "90002": "invalid MsgBody",
    "90003": "invalid To_Account",
    "90005": "invalid MsgRandom",
    "90007": "MsgBody is not an array",
    "90009": "the identifier is not an App admin",
    "90010": "invalid MsgBody",
    "90011": "more than 500 recipients",
    "90012": "the account does not exist",
    "90026": "MsgLifeTime asks for more than 7 days of offline storage",
    "90031": "invalid SyncOtherMachine",
    "90044": "invalid MsgLifeTime",
    "90048": "the account does not exist",
    "90992": "internal server error, retried",
    "90994": "internal server error, retried",
    "90995": "internal server error, retried",
    "91000": "internal server error, retried",
    "93000": "the message is too large",
    # The Push Service (timpush_batch, timpush_push; Tencent's error codes page 74196).
    "90018": "more accounts than a push takes",
    "90020": "a tag is longer than 50 bytes",
    "90022": "a tag is in both TagsOr and TagsAnd",
    "90024": "pushes too frequent: at least 1 s apart",
    "90032": "more than 10 tags in the push's Condition",
    "90033": "invalid attribute",
    "90039": "a push by attributes and by tags at once",
    "90040": "an empty tag in the push's Condition",
    "90045": "the Push Service is not enabled for the app",
    "90047": "over the day's budget of pushes to all users or by tag",
    "90056": "the push is over 10 KB",
    "90057": "DataId is longer than 64 bytes",
}


def meaning(code: object) -> str:
    """The meaning of a reply's ErrorCode, given as a number, its string, or None (no reply)."""
    key = TRANSPORT if code is None else str(code)
    return MEANINGS.get(key, UNKNOWN)
