"""The app as the sandbox knows it: its groups (`--groups FILE`) and accounts (`--accounts FILE`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson

from dispatcher.errors import InputError
from dispatcher.tim import rules


@dataclasses.dataclass(frozen=True)
class Group:
    type: str = "Public"
    members: frozenset[str] | None = None  # None: whoever is named counts as a member
    topics: frozenset[str] | None = None  # None: any TopicId is a topic (Community groups only)


def load_groups(path: str | Path) -> dict[str, Group]:
    """Read `--groups FILE`: {"GroupId": {"type": "Public", "members": ["u1", ...], "topics": [...]}}."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: must be a JSON object mapping GroupId to a group")
    groups = {}
    for gid, spec in doc.items():
        where = f"{path}: group {gid!r}"
        if rules.group_id_problem(gid):
            raise InputError(f"{where}: GroupId {rules.group_id_problem(gid)}")
        if not isinstance(spec, dict):
            raise InputError(f"{where}: must be an object")
        gtype = spec.get("type", "Public")
        if gtype not in rules.GROUP_TYPES:
            raise InputError(f"{where}: type must be one of {', '.join(sorted(rules.GROUP_TYPES))}")
        members, topics = spec.get("members"), spec.get("topics")
        for name, value in (("members", members), ("topics", topics)):
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise InputError(f"{where}: {name} must be an array of strings")
        groups[gid] = Group(
            gtype,
            None if members is None else frozenset(members),
            None if topics is None else frozenset(topics),
        )
    return groups


def load_accounts(path: str | Path) -> frozenset[str]:
    """Read `--accounts FILE`: the app's accounts, one UserID a line (blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8") from None
    return frozenset(line.strip() for line in text.splitlines() if line.strip())
