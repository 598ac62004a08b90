"""`v4/timpush/push`: the Push Service's push to all users, or to those a `Condition` selects by tag
or attribute (Tencent's document 60561). One job is one request.

A job names its audience explicitly: `"audience": "all"`, or a `Condition` of `TagsAnd`, `TagsOr`,
`AttrsAnd`, `AttrsOr` (the ones the page documents). A job with neither is rejected, and so is a
condition with a key the page does not document (`TagsNot`): a server that ignored it would push to
more users than meant. A mistake never widens who receives a push.

At most 100 calls a day per app (10 on the free edition), at least a second apart (90024 sooner,
90047 over the day). The limiter holds both: a pace of 1 a second, and a guard of 100 calls in any
24 hours (`call_quota`), shared across runs and processes through `--rate-store`.

Never twice: a push to all users, once devices show it, cannot be unseen (a recall does not undo
that), and Tencent documents no duplicate filter for this API. A request whose reply never came (a timeout, a
dropped connection after the request left, HTTP 5xx) is recorded `unknown` and never sent again on
its own (`resends_unsure`); only `--retry-unknown` does. A delivered push is final like any `ok`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import EXPORT_KEYS, Details, Endpoint, Reject, Spec, type_name
from dispatcher.tim.apis.timpush_batch import ADMIN_REQUIRED, NOT_ENABLED, push_fields, task_id

NAME: Final = "timpush_push"
PATH: Final = "/v4/timpush/push"
RATE: Final = 1.0  # "every two pushes must be more than 1 s apart"
DAILY_CALLS: Final = 100  # the standard and advanced editions' calls a day; the free edition's is 10
DAY: Final = 24 * 3600.0
MAX_BODY_BYTES: Final = 10 * 1024  # a larger request is 90056
MAX_TAG_BYTES: Final = 50
MAX_TAGS: Final = 10
TAG_KEYS: Final = ("TagsAnd", "TagsOr")
ATTR_KEYS: Final = ("AttrsAnd", "AttrsOr")
ALL: Final = "all"

TOO_SOON: Final = 90024  # less than a second after the last push: retried
OVER_THE_DAY: Final = 90047  # the day's pushes are spent: stop, resumable
BODY_TOO_LARGE: Final = 90056
INTERNAL: Final = 91000

NO_AUDIENCE: Final = (
    'names no audience: give "audience": "all" to push to every user, or a Condition (TagsAnd, TagsOr, AttrsAnd, '
    "AttrsOr) to push to some; a push to all users reaches every device"
)
NO_RECIPIENTS: Final = (
    f'{NAME} pushes to all users or those a Condition selects; to push to named accounts, use "api": "timpush_batch"'
)


def _tags(condition: Mapping[str, Any], key: str) -> list[str]:
    value = condition[key]
    if not isinstance(value, list) or not value:
        raise Reject("Condition", f"{key} must be a non-empty array of tags")
    for tag in value:
        if not isinstance(tag, str) or not tag:
            raise Reject("Condition", f"{key}: every tag must be a non-empty string")
        if len(tag.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
            raise Reject("Condition", f"{key}: the tag {tag[:20]!r}... is over {MAX_TAG_BYTES} bytes")
    return value


def _attrs(condition: Mapping[str, Any], key: str) -> None:
    value = condition[key]
    if not isinstance(value, dict) or not value:
        raise Reject("Condition", f"{key} must be a non-empty object of attribute names and values")
    for name, wanted in value.items():
        if not name or not isinstance(wanted, str) or not wanted:
            raise Reject("Condition", f"{key}: every attribute needs a name and a non-empty string value")


def condition(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The job's Condition, checked as the server checks it, and refused where the server might
    read it as less than it says (an unknown key, an empty one)."""
    value = doc["Condition"]
    if not isinstance(value, dict) or not value:
        raise Reject(
            "Condition", f"must be an object with TagsAnd, TagsOr, AttrsAnd or AttrsOr, not {type_name(value)}"
        )
    unknown = sorted(set(value) - {*TAG_KEYS, *ATTR_KEYS})
    if unknown:
        raise Reject(
            "Condition",
            f"{unknown[0]} is not a condition Tencent documents (TagsAnd, TagsOr, AttrsAnd, AttrsOr): "
            "a server that ignored it would push to more users than meant",
        )
    tags = [key for key in TAG_KEYS if key in value]
    attrs = [key for key in ATTR_KEYS if key in value]
    if tags and attrs:
        raise Reject("Condition", "a push selects by tags or by attributes, not both (90039)")
    named = [tag for key in tags for tag in _tags(value, key)]
    if len(named) > MAX_TAGS:
        raise Reject("Condition", f"names {len(named)} tags; at most {MAX_TAGS}")
    if len(tags) == 2 and set(value["TagsAnd"]) & set(value["TagsOr"]):
        raise Reject("Condition", "a tag is in both TagsAnd and TagsOr (90022)")
    for key in attrs:
        _attrs(value, key)
    return dict(value)


class TimPushPush(Endpoint):
    name = NAME
    path = PATH
    keys = ("api", "job_id", "audience", "Condition", "From_Account", "OfflinePushInfo")
    reserved: ClassVar[dict[str, str]] = {
        "MsgRandom": "is set by the dispatcher, the same for every attempt of the job; leave it out",
        **dict.fromkeys(("To_Account", "recipients_file", *EXPORT_KEYS), NO_RECIPIENTS),
        "GroupId": f"{NAME} pushes to users, not into a group",
    }
    recipients_key = None  # one request reaches its whole audience
    documented_rate: ClassVar[float] = RATE
    default_rate: ClassVar[float | None] = RATE
    max_rate: ClassVar[float | None] = RATE  # no edition pushes faster: 90024 "too frequent" beyond
    call_quota: ClassVar[tuple[int, float] | None] = (DAILY_CALLS, DAY)
    transient_codes: ClassVar[frozenset[int]] = frozenset({INTERNAL})
    over_rate_codes: ClassVar[frozenset[int]] = frozenset({TOO_SOON})
    resends_unsure = False

    def validate(self, doc: Mapping[str, Any]) -> Spec:
        audience = doc.get("audience")
        if "audience" in doc and audience != ALL:
            raise Reject("audience", f'must be "all" (or leave it out and give a Condition), not {audience!r}')
        if audience == ALL and "Condition" in doc:
            raise Reject("audience", '"all" and a Condition contradict each other: give one of them')
        if audience != ALL and "Condition" not in doc:
            raise Reject("audience", NO_AUDIENCE)
        fields = push_fields(doc)
        if "Condition" in doc:
            fields["Condition"] = condition(doc)
        size = len(orjson.dumps({**fields, "MsgRandom": rules.UINT32_MAX}))
        if size > MAX_BODY_BYTES:
            raise Reject("OfflinePushInfo", f"the push is {size:,} bytes as JSON; at most {MAX_BODY_BYTES:,} (90056)")
        return Spec(None, fields)

    def hasher(self, spec: Spec, batch_size: int, all_members: bool) -> hashlib.blake2b:
        # One request whatever --batch-size says: a resume with another must find the same job.
        return super().hasher(spec, rules.MAX_MEMBERS, all_members)

    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        return orjson.dumps({**fields, "MsgRandom": random})

    def details(self, doc: Mapping[str, Any]) -> Details:
        return Details(task_id=task_id(doc))

    def config_hint(self, error_code: int | None) -> str:
        if error_code == NOT_ENABLED:
            return "enable the Push Service for this app in Tencent's console (Push Service, then Activate)"
        if error_code == OVER_THE_DAY:
            return "the day's pushes to all users or by tag are spent (100, 10 on the free edition); resume tomorrow"
        return super().config_hint(error_code)

    def classify(self, error_code: int | None, http_status: int | None, details: Details) -> rules.Verdict:
        if error_code in (ADMIN_REQUIRED, NOT_ENABLED, OVER_THE_DAY):
            return rules.Verdict.CONFIG  # every push would fail alike, today
        return super().classify(error_code, http_status, details)
