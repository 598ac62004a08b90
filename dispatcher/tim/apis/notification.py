"""`v4/group_open_http_svc/send_group_system_notification`: a system notification to a group's
members (all of them, or up to 500 named per call). What a job without "api" means, exactly as
before there were other APIs: same fields, job hash, default job_id and request body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import EXPORT_KEYS, Endpoint, Reject, Spec, group_id, string

NAME: Final = "send_group_system_notification"


class Notification(Endpoint):
    name = NAME
    path = rules.SEND_PATH
    keys = (
        "GroupId",
        "Content",
        "ToMembers_Account",
        "recipients_file",
        *EXPORT_KEYS,
        "TopicId",
        "job_id",
        "group_type",
        "api",
    )
    recipients_key = "ToMembers_Account"
    takes_random = False  # the API has no Random: no hash a request for one
    names_api = False

    def validate(self, doc: Mapping[str, Any]) -> Spec:
        gid = group_id(doc)
        content = string(doc, "Content", required=True)
        assert content is not None
        problem = rules.content_problem(content)
        if problem:
            raise Reject("Content", problem)
        topic_id = string(doc, "TopicId")
        group_type = string(doc, "group_type")
        if group_type is not None and group_type not in rules.GROUP_TYPES:
            raise Reject("group_type", f"must be one of {', '.join(sorted(rules.GROUP_TYPES))}")
        fields: dict[str, object] = {"GroupId": gid, "Content": content}
        if topic_id is not None:
            fields["TopicId"] = topic_id
        return Spec(gid, fields, content=content, topic_id=topic_id, group_type=group_type)

    def check_recipients(self, spec: Spec, doc: Mapping[str, Any], named: bool) -> None:
        group_type = spec.group_type
        if group_type is None:
            return
        if named and not rules.accepts_named_members(group_type):
            field = "ToMembers_Account" if "ToMembers_Account" in doc else "recipients_file"
            raise Reject(field, f"a {group_type} group takes notifications to all members only")
        if spec.topic_id is not None and not rules.accepts_topics(group_type):
            raise Reject("TopicId", f"applies to Community groups only, not {group_type}")

    def hasher(self, spec: Spec, batch_size: int, all_members: bool) -> hashlib.blake2b:
        # As before the seam, so that journals written then resume.
        head = [spec.group_id, spec.content, spec.topic_id, all_members, batch_size]
        return hashlib.blake2b(orjson.dumps(head), digest_size=16)

    def derived_doc(self, spec: Spec, recipients: object) -> bytes:
        return orjson.dumps([spec.group_id, spec.topic_id, spec.content, recipients])

    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        # The API takes no message random: a notification is not deduplicated by the server.
        doc: dict[str, object] = {"GroupId": fields["GroupId"], "Content": fields["Content"]}
        if recipients is not None:
            doc["ToMembers_Account"] = recipients
        if "TopicId" in fields:
            doc["TopicId"] = fields["TopicId"]
        return orjson.dumps(doc)
