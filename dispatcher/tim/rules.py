"""The rules of Tencent Cloud IM's REST APIs that every API we drive shares (regions, ID limits, the
error table, `classify`), and those of send_group_system_notification that its endpoint module uses.

Both the client side (which validates jobs before sending) and the sandbox (which enforces the rules
like the real server) read them from here, so the two cannot drift apart. What one API alone does
is in its module of dispatcher.tim.apis.
"""

from __future__ import annotations

import enum
from typing import Final

SEND_PATH: Final = "/v4/group_open_http_svc/send_group_system_notification"

MAX_MEMBERS: Final = 500  # UserIDs in one ToMembers_Account
MAX_GROUP_ID_BYTES: Final = 48
MAX_USER_ID_BYTES: Final = 32
# The endpoint's page states no limit for Content. Tencent Cloud IM's "Use Limits" page
# (https://www.tencentcloud.com/document/product/1047/34381) says a one-to-one or group message must be
# no longer than 12KB; we read that as 12 KiB of UTF-8, and refuse more before sending rather than
# let the server refuse it (a 50 MB Content got HTTP 413, which stops the run).
MAX_CONTENT_BYTES: Final = 12 * 1024
DEFAULT_RATE: Final = 200  # calls per second an app may make without add-ons
# batchsendmsg: messages a minute, counted per recipient (since 2023-08-01; paid editions raise it).
DEFAULT_MESSAGE_QUOTA: Final = 12_000
QUOTA_SECONDS: Final = 60.0
GROUP_RATE: Final = 40  # send_group_msg: messages a second into one group before frequency control drops them
UINT32_MAX: Final = 2**32 - 1

GROUP_TYPES: Final = frozenset({"Private", "Public", "ChatRoom", "AVChatRoom", "Community", "Work", "Meeting"})

REGIONS: Final = {
    "china": "https://console.tim.qq.com",
    "singapore": "https://adminapisgp.im.qcloud.com",
    "seoul": "https://adminapikr.im.qcloud.com",
    "tokyo": "https://adminapijpn.im.qcloud.com",
    "frankfurt": "https://adminapiger.im.qcloud.com",
    "mumbai": "https://adminapiind.im.qcloud.com",
    "silicon-valley": "https://adminapiusa.im.qcloud.com",
    "jakarta": "https://adminapiidn.im.qcloud.com",
}
DEFAULT_REGION: Final = "china"
# Each region's backup domain, beside its main one in REGIONS: Tencent's REST overview (document 34620)
# lists them for when the main domain cannot be reached (its DNS hijacked by an operator, say). Tokyo
# has none there, and none is guessed: with no backup, a run behaves as it did before backups.
BACKUP_DOMAINS: Final = {
    "china": "https://adminapi.my-imcloud.com",
    "singapore": "https://adminapisgp.my-imcloud.com",
    "seoul": "https://adminapikr.my-imcloud.com",
    "frankfurt": "https://adminapiger.my-imcloud.com",
    "mumbai": "https://adminapiind.my-imcloud.com",
    "silicon-valley": "https://adminapiusa.my-imcloud.com",
    "jakarta": "https://adminapiidn.my-imcloud.com",
}

# ErrorCodes, grouped by what the dispatcher does about them (docs/reference.md, section 1).
OK: Final = 0
TRANSIENT_CODES: Final = frozenset({10002, 60008, 70169, 70202, 70500})
OVER_RATE_CODES: Final = frozenset({60007, 60011, 10006, 10023})
SIG_RATE_LIMITED: Final = 70050
SIG_EXPIRED: Final = 70001
CONFIG_CODES: Final = frozenset({60004, 60010, 60026, 70003, 70009, 70013, 70014, 70016, 70020, 70403})

# Codes the sandbox answers with (the real server's meaning).
INTERNAL_ERROR: Final = 10002
INVALID_PARAMETER: Final = 10004
GROUP_NOT_FOUND: Final = 10010
INVALID_GROUP_ID: Final = 10015
OVER_RATE: Final = 60007
NOT_ADMIN: Final = 60010
SIG_INVALID: Final = 70003
SIG_IDENTIFIER_MISMATCH: Final = 70013
SIG_SDKAPPID_MISMATCH: Final = 70014
SDKAPPID_NOT_FOUND: Final = 70020
MESSAGE_TOO_LONG: Final = 80002


class Verdict(enum.Enum):
    """What to do with one reply."""

    OK = "ok"
    RETRY = "retry"  # transient, over-rate or transport fault: back off and try again
    PAUSE = "pause"  # 70050: pause all sending, then retry
    RENEW = "renew"  # 70001: renew the UserSig and retry at once
    CONFIG = "config"  # every request will fail the same way: stop the run
    PERMANENT = "permanent"  # this request can never succeed: record failed


def classify(error_code: int | None, http_status: int | None) -> Verdict:
    """Classify a reply. `error_code` is None for a transport fault (no parsable reply)."""
    if error_code is None:
        # 5xx, 429, no response, or an unparsable body are transport faults. 413 is this request's
        # own size: it can never succeed. Any other HTTP status (404, 403, ...) means we are talking
        # to the wrong place: every request would fail alike.
        if http_status is None or http_status == 200 or http_status == 429 or http_status >= 500:
            return Verdict.RETRY
        if http_status == 413:
            return Verdict.PERMANENT
        return Verdict.CONFIG
    if error_code == OK:
        return Verdict.OK
    if error_code in TRANSIENT_CODES or error_code in OVER_RATE_CODES:
        return Verdict.RETRY
    if error_code == SIG_RATE_LIMITED:
        return Verdict.PAUSE
    if error_code == SIG_EXPIRED:
        return Verdict.RENEW
    if error_code in CONFIG_CODES:
        return Verdict.CONFIG
    return Verdict.PERMANENT


def group_id_problem(value: object) -> str | None:
    """Why `value` is not a valid GroupId, or None if it is."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if not (value.isascii() and value.isprintable()):  # for ASCII, printable is exactly 0x20-0x7e
        return "must be printable ASCII"
    if len(value) > MAX_GROUP_ID_BYTES:
        return f"must be at most {MAX_GROUP_ID_BYTES} bytes"
    return None


def content_problem(value: str) -> str | None:
    """Why `value` is too large to send as Content, or None if it is not."""
    if len(value) * 4 <= MAX_CONTENT_BYTES:  # no character takes more than 4 bytes: no need to encode
        return None
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CONTENT_BYTES:
        return f"is {size:,} bytes; at most {MAX_CONTENT_BYTES:,} bytes (UTF-8) can be sent"
    return None


# No account name holds a control or format character; one in a UserID is a damaged export (two files
# joined, so a byte-order mark stands mid-file; `\r`-only line endings, a NUL) that would be sent,
# skipped by the server as a non-member, and still recorded `ok`.
UNPRINTABLE: Final = "must not contain control or invisible characters (a damaged export?)"


def user_id_problem(value: object) -> str | None:
    """Why `value` is not a valid UserID, or None if it is."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > MAX_USER_ID_BYTES or len(value.encode("utf-8")) > MAX_USER_ID_BYTES:
        return f"must be at most {MAX_USER_ID_BYTES} bytes"
    if not value.isprintable():
        return UNPRINTABLE
    return None


def accepts_named_members(group_type: str) -> bool:
    """AVChatRoom groups take notifications to all members only."""
    return group_type != "AVChatRoom"


def accepts_topics(group_type: str) -> bool:
    """TopicId applies to (topic-enabled) Community groups only."""
    return group_type == "Community"
