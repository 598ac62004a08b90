"""The sandbox's send_group_system_notification: GroupId and UserID limits, at most 500 named
members, AVChatRoom all-members only, TopicId for Community groups only, Content of at most 12 KiB
(80002)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal
from dispatcher.tim import rules
from dispatcher.tim.apis.notification import Notification

BODY_KEYS: Final = frozenset({"GroupId", "Content", "ToMembers_Account", "TopicId"})


class NotificationEmulator(Emulator):
    api = Notification
    json_error_code = rules.INVALID_PARAMETER

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        unknown = set(body) - BODY_KEYS
        if unknown:
            raise Refusal(rules.INVALID_PARAMETER, f"unknown field {sorted(unknown)[0]}")
        gid, group = box.group(body.get("GroupId"))
        content = body.get("Content")
        if not isinstance(content, str) or not content:
            raise Refusal(rules.INVALID_PARAMETER, "Content must be a non-empty string")
        problem = rules.content_problem(content)
        if problem:
            raise Refusal(rules.MESSAGE_TOO_LONG, f"message too long: Content {problem}")
        members = body.get("ToMembers_Account")
        if members is not None:
            if not isinstance(members, list) or len(members) > rules.MAX_MEMBERS:
                raise Refusal(
                    rules.INVALID_PARAMETER, f"ToMembers_Account must list at most {rules.MAX_MEMBERS} UserIDs"
                )
            for uid in members:
                if rules.user_id_problem(uid):
                    raise Refusal(rules.INVALID_PARAMETER, f"UserID {uid!r} {rules.user_id_problem(uid)}")
            if not members:
                members = None  # the API reads an empty list as all members
            elif not rules.accepts_named_members(group.type):
                raise Refusal(rules.INVALID_PARAMETER, f"{group.type} groups take notifications to all members only")
        topic = box.topic(group, body.get("TopicId"))

        def deliver(now: float) -> dict[str, Any]:
            users: Iterable[str] = box.members(group, members)
            box.ledger.add(gid, topic, content, users)
            return {}

        return deliver
