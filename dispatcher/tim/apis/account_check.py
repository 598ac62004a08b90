"""`v4/im_open_login_svc/account_check`: read-only, whether accounts were imported into the app.
`dispatcher check` asks it of the admin account (so that a check of jobs that name no group still
tries the credentials) and of every sender (`From_Account`) the jobs name. Not a job's API.

Request: `CheckItem`, 1 to 100 `{"UserID": ...}`. Reply: `ResultItem`, one per account, with a
`ResultCode` of its own and `AccountStatus` `Imported` or `NotImported`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

PATH: Final = "/v4/im_open_login_svc/account_check"
MAX_ACCOUNTS: Final = 100  # accounts in one request
IMPORTED: Final = "Imported"
NOT_IMPORTED: Final = "NotImported"
# The account APIs' "invalid parameter" (more than 100 accounts, a bad UserID).
BAD_PARAMETER: Final = 70402


@dataclasses.dataclass(frozen=True, slots=True)
class AccountFact:
    user_id: str
    result_code: int  # 0: checked (see `imported`); else the account could not be checked
    imported: bool = False
    result_info: str = ""

    @property
    def exists(self) -> bool:
        return self.result_code == 0 and self.imported


def body(user_ids: Sequence[str]) -> bytes:
    return orjson.dumps({"CheckItem": [{"UserID": uid} for uid in user_ids]})


def parse(doc: Mapping[str, Any], asked: Sequence[str]) -> list[AccountFact]:
    """One fact per account asked, in the order asked; one the reply leaves out is not answered (-1)."""
    answered: dict[str, AccountFact] = {}
    items = doc.get("ResultItem")
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("UserID"), str):
            continue
        code = item.get("ResultCode", 0)
        answered[item["UserID"]] = AccountFact(
            item["UserID"],
            code if type(code) is int else -1,
            item.get("AccountStatus") == IMPORTED,
            str(item.get("ResultInfo", "")),
        )
    return [answered.get(uid, AccountFact(uid, -1, result_info="not in the reply")) for uid in asked]
