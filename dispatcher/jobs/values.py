"""Jobs as Python values, for `Runner(jobs=...)`: one class a API, each the job of one line of a jobs
file, its fields named in Python (a misspelt field is a TypeError where it is written, not a rejection).

`job()` is the dict a jobs file's line holds, and the run reads only that: a value and its dict are one
job (the same checks, job_id and hash). Recipients may be any iterable of UserIDs, a generator too.
Other request fields of the API go in `fields`, under the API's own names (`{"SyncOtherMachine": 2}`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from dispatcher.errors import UsageError


def _job(named: Mapping[str, object], fields: Mapping[str, object]) -> dict[str, object]:
    given = {key: value for key, value in named.items() if value is not None}
    twice = sorted(set(given) & set(fields))
    if twice:  # one of the two would be dropped without a word
        raise UsageError(f"fields repeats {', '.join(twice)}; give each once")
    return {**given, **fields}


@dataclasses.dataclass(frozen=True)
class Notification:
    """A group system notification (send_group_system_notification): to the members named in `to`, or,
    with `to` None, to every member of the group."""

    group_id: str
    content: str
    to: Iterable[str] | None = None
    topic_id: str | None = None  # of a Community group
    group_type: str | None = None  # checked before sending: Private, Public, ChatRoom, AVChatRoom, Community
    job_id: str | None = None

    def job(self) -> dict[str, object]:
        named: dict[str, object] = {"job_id": self.job_id, "GroupId": self.group_id, "Content": self.content}
        named.update(ToMembers_Account=self.to, TopicId=self.topic_id, group_type=self.group_type)
        return _job(named, {})


@dataclasses.dataclass(frozen=True)
class DirectMessage:
    """One-to-one messages (batchsendmsg) to every account in `to`: a `text`, or a `msg_body`."""

    to: Iterable[str]
    text: str | None = None
    msg_body: Sequence[Mapping[str, object]] | None = None
    sender: str | None = None  # From_Account
    job_id: str | None = None
    fields: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def job(self) -> dict[str, object]:
        named: dict[str, object] = {"api": "batchsendmsg", "job_id": self.job_id, "To_Account": self.to}
        named.update(Text=self.text)
        named.update(MsgBody=self.msg_body, From_Account=self.sender)
        return _job(named, self.fields)


@dataclasses.dataclass(frozen=True)
class GroupMessage:
    """One message into a group (send_group_msg), to all its members: a `text`, or a `msg_body`."""

    group_id: str
    text: str | None = None
    msg_body: Sequence[Mapping[str, object]] | None = None
    sender: str | None = None  # From_Account
    topic_id: str | None = None
    group_type: str | None = None
    job_id: str | None = None
    fields: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def job(self) -> dict[str, object]:
        named: dict[str, object] = {"api": "send_group_msg", "job_id": self.job_id, "GroupId": self.group_id}
        named.update(Text=self.text)
        named.update(MsgBody=self.msg_body, From_Account=self.sender, TopicId=self.topic_id, group_type=self.group_type)
        return _job(named, self.fields)


JobValue = Notification | DirectMessage | GroupMessage
