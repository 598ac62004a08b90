"""The sandbox's read-only calls, which `dispatcher check` makes: get_group_info (the groups it
knows, their types and member counts; 10010 for an unknown group, 10015 for an invalid GroupId, at
most 50 GroupIds a request) and account_check (the accounts it knows). They are authenticated,
rated and counted as every request is; they deliver nothing, so the ledger never changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal
from dispatcher.tim import rules
from dispatcher.tim.apis import account_check, group_info

GROUP_INFO_KEYS: Final = frozenset({"GroupIdList", "ResponseFilter"})


class ReadOnlyEmulator(Emulator):
    """A call that reads: it counts its requests in the stats (`NAME_calls`) and delivers nothing."""

    served: ClassVar[str]  # the path
    name: ClassVar[str]  # its name in the stats

    def __init__(self) -> None:
        self.calls = 0

    @property
    def path(self) -> str:
        return self.served

    def stats(self) -> dict[str, int]:
        return {f"{self.name}_calls": self.calls} if self.calls else {}


class GroupInfoEmulator(ReadOnlyEmulator):
    served = group_info.PATH
    name = "get_group_info"

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        self.calls += 1
        unknown = set(body) - GROUP_INFO_KEYS
        if unknown:
            raise Refusal(rules.INVALID_PARAMETER, f"unknown field {sorted(unknown)[0]}")
        ids = body.get("GroupIdList")
        if not isinstance(ids, list) or not ids:
            raise Refusal(rules.INVALID_PARAMETER, "GroupIdList must be a non-empty array of GroupIds")
        if len(ids) > group_info.MAX_GROUPS:
            raise Refusal(rules.INVALID_PARAMETER, f"GroupIdList lists more than {group_info.MAX_GROUPS} groups")
        wanted = (
            body.get("ResponseFilter", {}).get("GroupBaseInfoFilter")
            if isinstance(body.get("ResponseFilter"), dict)
            else None
        )
        entries = [_group(box, gid, wanted) for gid in ids]

        def deliver(now: float) -> dict[str, Any]:
            return {"GroupInfo": entries}

        return deliver


def _group(box: Box, gid: object, wanted: object) -> dict[str, Any]:
    try:
        gid, group = box.group(gid)
    except Refusal as refusal:
        return {"GroupId": gid, "ErrorCode": refusal.code, "ErrorInfo": refusal.info}
    # A group whose members the sandbox does not know (no --groups, or no "members") has none to count.
    profile: dict[str, Any] = {
        "Type": group.type,
        "MemberNum": 0 if group.members is None else len(group.members),
        "Name": gid,
    }
    if isinstance(wanted, list):
        profile = {k: v for k, v in profile.items() if k in wanted}
    return {"GroupId": gid, "ErrorCode": 0, "ErrorInfo": "", **profile}


class AccountCheckEmulator(ReadOnlyEmulator):
    served = account_check.PATH
    name = "account_check"

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        self.calls += 1
        items = body.get("CheckItem")
        if not isinstance(items, list) or not items:
            raise Refusal(account_check.BAD_PARAMETER, "CheckItem must be a non-empty array")
        if len(items) > account_check.MAX_ACCOUNTS:
            raise Refusal(
                account_check.BAD_PARAMETER, f"CheckItem lists more than {account_check.MAX_ACCOUNTS} accounts"
            )
        results = []
        for item in items:
            uid = item.get("UserID") if isinstance(item, dict) else None
            problem = rules.user_id_problem(uid)
            if problem:
                results.append(
                    {"UserID": uid, "ResultCode": account_check.BAD_PARAMETER, "ResultInfo": f"UserID {problem}"}
                )
                continue
            known = box.accounts is None or uid in box.accounts
            status = account_check.IMPORTED if known else account_check.NOT_IMPORTED
            results.append({"UserID": uid, "ResultCode": 0, "ResultInfo": "", "AccountStatus": status})

        def deliver(now: float) -> dict[str, Any]:
            return {"ResultItem": results}

        return deliver
