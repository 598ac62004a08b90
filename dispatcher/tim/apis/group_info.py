"""`v4/group_open_http_svc/get_group_info`: read-only, a group's profile. `dispatcher check` asks it
whether each group the jobs name exists, with its type and member count. Not a job's API: it is
not in the registry, and no job is sent with it.

Request: `GroupIdList` (1 to 50 GroupIds) and a `ResponseFilter` that asks for `Type` and
`MemberNum` only. Reply: `GroupInfo`, one entry per GroupId, each with an `ErrorCode` of its own
(10010: no such group; 10015: an invalid GroupId) besides the reply's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

PATH: Final = "/v4/group_open_http_svc/get_group_info"
MAX_GROUPS: Final = 50  # GroupIds in one request (Tencent's page: "a maximum of 50 groups")
FIELDS: Final = ("Type", "MemberNum")  # the profile fields asked for: nothing more is read


@dataclasses.dataclass(frozen=True, slots=True)
class GroupFact:
    """What the server says of one group."""

    group_id: str
    error_code: int  # 0: it exists; 10010: it does not; 10015: an invalid GroupId
    type: str = ""
    members: int = 0
    error_info: str = ""

    @property
    def exists(self) -> bool:
        return self.error_code == 0


def body(group_ids: Sequence[str]) -> bytes:
    return orjson.dumps({"GroupIdList": list(group_ids), "ResponseFilter": {"GroupBaseInfoFilter": list(FIELDS)}})


def parse(doc: Mapping[str, Any], asked: Sequence[str]) -> list[GroupFact]:
    """One fact per GroupId asked, in the order asked. A GroupId the reply leaves out, or gives no
    code for, is reported as not answered (ErrorCode -1), never taken for an existing group."""
    answered: dict[str, GroupFact] = {}
    entries = doc.get("GroupInfo")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("GroupId"), str):
            continue
        code = entry.get("ErrorCode", 0)
        members = entry.get("MemberNum", 0)
        kind = entry.get("Type", "")
        answered[entry["GroupId"]] = GroupFact(
            entry["GroupId"],
            code if type(code) is int else -1,
            kind if isinstance(kind, str) else "",
            members if type(members) is int else 0,
            str(entry.get("ErrorInfo", "")),
        )
    return [answered.get(gid, GroupFact(gid, -1, error_info="not in the reply")) for gid in asked]
