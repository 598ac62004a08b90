"""Job validation: every rejection rule names the file, the line and the field; nothing widens."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from tests.conftest import DISPATCHER, ROOT, cli_env, fifo, within, write_jobs

BASE = {"GroupId": "@TGS#g", "Content": "hello"}
BOM = b"\xef\xbb\xbf"


def one(tmp_path: Path, line: dict[str, Any] | str, batch_size: int = 500) -> Job | Rejection:
    path = write_jobs(tmp_path / "jobs.jsonl", ["", line])  # a blank first line: the job is on line 2
    (item,) = list(read_jobs([str(path)], batch_size))
    return item


def rejected(tmp_path: Path, line: dict[str, Any] | str) -> Rejection:
    item = one(tmp_path, line)
    assert isinstance(item, Rejection), item
    assert item.line == 2
    assert item.message.startswith(f"{tmp_path / 'jobs.jsonl'}:2")
    return item


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("not json", None, "not valid JSON"),
        ('["GroupId"]', None, "JSON object"),
        ("\xff", None, "not valid JSON"),
        ({"Content": "x"}, "GroupId", "required"),
        ({"GroupId": 5, "Content": "x"}, "GroupId", "must be a string"),
        ({"GroupId": "@TGS#" + "g" * 44, "Content": "x"}, "GroupId", "48 bytes"),
        ({"GroupId": "@TGS#g"}, "Content", "required"),
        ({**BASE, "Content": ""}, "Content", "empty"),
        ({**BASE, "Content": None}, "Content", "not null"),
        ({**BASE, "Content": "x" * 12_289}, "Content", "is 12,289 bytes; at most 12,288 bytes (UTF-8) can be sent"),
        ({**BASE, "Content": "é" * 6_145}, "Content", "is 12,290 bytes; at most 12,288 bytes (UTF-8) can be sent"),
        ({**BASE, "ToMembers_Account": None}, "ToMembers_Account", "not null"),
        ({**BASE, "ToMembers_Account": []}, "ToMembers_Account", "empty"),
        ({**BASE, "ToMembers_Account": "peter"}, "ToMembers_Account", "array"),
        ({**BASE, "ToMember_Account": ["peter"]}, "ToMember_Account", "did you mean ToMembers_Account"),
        ({**BASE, "ToMembers_Account": ["peter", ""]}, "ToMembers_Account", "item 1"),
        ({**BASE, "ToMembers_Account": ["x" * 33]}, "ToMembers_Account", "32 bytes"),
        ({**BASE, "ToMembers_Account": ["é" * 17]}, "ToMembers_Account", "32 bytes"),
        ({**BASE, "ToMembers_Account": [42]}, "ToMembers_Account", "must be a string"),
        ({**BASE, "ToMembers_Account": ["a"], "recipients_file": "r.txt"}, "recipients_file", "together"),
        ({**BASE, "recipients_file": None}, "recipients_file", "not null"),
        ({**BASE, "recipients_file": "missing.txt"}, "recipients_file", "cannot read"),
        ({**BASE, "group_type": "AVChatRoom", "ToMembers_Account": ["a"]}, "ToMembers_Account", "all members"),
        ({**BASE, "group_type": "Public", "TopicId": "t"}, "TopicId", "Community"),
        ({**BASE, "group_type": "Secret"}, "group_type", "must be one of"),
        ({**BASE, "TopicId": None}, "TopicId", "not null"),
        ({**BASE, "job_id": ""}, "job_id", "empty"),
        (
            {**BASE, "recipients_file": "a\u0000b.txt"},
            "recipients_file",
            "a\x00b.txt: cannot read: not a valid file name",
        ),
        ({**BASE, "ToMembers_Account": ["peter", "a\u0000b"]}, "ToMembers_Account", "item 1"),
        ({**BASE, "ToMembers_Account": ["\ufeffpeter"]}, "ToMembers_Account", "invisible characters"),
    ],
)
def test_rejections(tmp_path: Path, line: dict[str, Any] | str, field: str | None, words: str) -> None:
    rej = rejected(tmp_path, line)
    assert rej.field == field
    assert words in rej.message
    if field:
        assert f"field {field}" in rej.message


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b'{"GroupId": "@TGS#g", "Content": "\xff"}\n')
    (item,) = list(read_jobs([str(path)], 500))
    assert isinstance(item, Rejection)
    assert "UTF-8" in item.message


def test_rejection_keeps_the_job_id_and_group(tmp_path: Path) -> None:
    rej = rejected(tmp_path, {**BASE, "job_id": "promo", "ToMembers_Account": []})
    assert (rej.job_id, rej.group_id) == ("promo", "@TGS#g")
    # Without a job_id, nothing of it is sent: it is named by file name and line, for the record.
    assert rejected(tmp_path, {**BASE, "ToMembers_Account": []}).job_id == "jobs.jsonl:2"


@pytest.mark.parametrize(
    ("extra", "hashed", "expected"),
    [
        ({"ToMembers_Account": ["b", "a", "b"]}, ["@TGS#g", None, "hello", ["b", "a"]], "auto-cd4a9f9c0ca5ea8c"),
        (
            {"TopicId": "@TGS#g@TOPIC#t", "recipients_file": "r.txt"},
            ["@TGS#g", "@TGS#g@TOPIC#t", "hello", {"recipients_file": "r.txt"}],
            "auto-516e60a064b14a71",
        ),
        ({}, ["@TGS#g", None, "hello", "all members"], "auto-59c442fa2cac74d6"),
    ],
)
def test_default_job_id_is_made_from_what_is_sent(
    tmp_path: Path, extra: dict[str, Any], hashed: list[Any], expected: str
) -> None:
    # The literals were computed once with hashlib, as docs/guide/choices.md states the rule:
    assert "auto-" + hashlib.blake2b(orjson.dumps(hashed), digest_size=8).hexdigest() == expected
    (tmp_path / "r.txt").write_text("peter\n")
    job = one(tmp_path, {**BASE, **extra})
    assert isinstance(job, Job)
    assert job.job_id == expected


def test_default_ids_survive_inserting_and_reordering_jobs(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("peter\n")
    a = {**BASE, "Content": "a", "ToMembers_Account": ["peter"]}
    b = {**BASE, "Content": "b", "recipients_file": "r.txt"}
    c = {**BASE, "Content": "c"}

    def ids(name: str, jobs: list[dict[str, Any]], batch_size: int = 500) -> dict[str, str]:
        items = list(read_jobs([str(write_jobs(tmp_path / name, jobs))], batch_size))
        assert all(isinstance(item, Job) for item in items)
        return {str(item.fields["Content"]): item.job_id for item in items if isinstance(item, Job)}

    before = ids("jobs.jsonl", [a, b])
    after = ids("jobs.jsonl", [c, b, a])  # one job inserted at the top, the others swapped
    assert (after["a"], after["b"]) == (before["a"], before["b"])
    assert len(set(after.values())) == 3
    # Nor do the jobs file's name, the batch size or group_type count.
    assert ids("other.jsonl", [{**a, "group_type": "Public"}, b], batch_size=7) == before


def test_regenerated_export_keeps_its_id_so_a_resume_sees_it_changed(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("peter\n")
    first = one(tmp_path, {**BASE, "recipients_file": "r.txt"})
    (tmp_path / "r.txt").write_text("peter\namara\n")
    second = one(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert isinstance(first, Job) and isinstance(second, Job)
    # "auto-" + blake2b(orjson.dumps(["@TGS#g", None, "hello", {"recipients_file": "r.txt"}]), digest_size=8)
    assert first.job_id == second.job_id == "auto-2dfbffc6e6d49b43"
    assert first.job_hash != second.job_hash


def test_identical_jobs_without_a_job_id_are_sent_once(tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.jsonl", [BASE, {**BASE, "Content": "other"}, BASE])
    first, other, third = read_jobs([str(path)], 500)
    assert isinstance(first, Job) and isinstance(other, Job)
    assert isinstance(third, Rejection)
    assert third.job_id == "jobs.jsonl:3"
    assert third.message == (
        f"{path}:3: field job_id: repeats the job_id of {path}:1 (auto-59c442fa2cac74d6): identical jobs "
        "without a job_id get the same id; give each a job_id if it is meant to be sent twice"
    )


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_empty_export_is_never_all_members(tmp_path: Path, content: str) -> None:
    (tmp_path / "r.txt").write_text(content)
    rej = rejected(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert rej.field == "recipients_file"
    assert "never means all members" in rej.reason


def test_bad_userid_deep_in_an_export(tmp_path: Path) -> None:
    lines = [f"user{i}" for i in range(900_000)]
    lines[899_999] = "x" * 33
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n")
    rej = rejected(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert "r.txt line 900000" in rej.reason


def test_export_with_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_bytes(b"peter\n\xff\xfe\n")
    assert "r.txt line 2: not valid UTF-8" in rejected(tmp_path, {**BASE, "recipients_file": "r.txt"}).reason


def test_repeated_job_id(tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "job_id": "a"}, {**BASE, "job_id": "a"}])
    first, second = read_jobs([str(path)], 500)
    assert isinstance(first, Job)
    assert isinstance(second, Rejection)
    assert second.field == "job_id"
    assert f"{path}:1" in second.reason


def test_duplicates_sent_once_in_file_order(tmp_path: Path) -> None:
    job = one(tmp_path, {**BASE, "ToMembers_Account": ["b", "a", "b", "c", "a"]})
    assert isinstance(job, Job)
    assert job.recipient_count == 3
    assert [b.recipients for b in split(job)] == [("b", "a", "c")]


def test_export_relative_to_the_jobs_file_with_duplicates(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("b\na\n\nb\r\nc\n")
    job = one(tmp_path, {**BASE, "recipients_file": "r.txt"}, batch_size=2)
    assert isinstance(job, Job)
    assert [b.recipients for b in split(job)] == [("b", "a"), ("c",)]
    inline = one(tmp_path, {**BASE, "ToMembers_Account": ["b", "a", "c"]}, batch_size=2)
    assert isinstance(inline, Job)
    assert inline.job_hash == job.job_hash  # the same recipients give the same hash


def test_batches_are_deterministic(tmp_path: Path) -> None:
    ids = [f"u{i}" for i in range(1250)]
    job = one(tmp_path, {**BASE, "ToMembers_Account": ids})
    assert isinstance(job, Job)
    batches = list(split(job))
    assert [len(b.recipients or ()) for b in batches] == [500, 500, 250]
    assert job.batches == 3
    assert [r for b in batches for r in b.recipients or ()] == ids
    assert [b.recipients for b in split(job)] == [b.recipients for b in batches]


def test_all_members_is_one_batch(tmp_path: Path) -> None:
    job = one(tmp_path, BASE)
    assert isinstance(job, Job)
    assert [b.recipients for b in split(job)] == [None]
    assert b'"ToMembers_Account"' not in next(split(job)).body()


def test_hash_changes_with_content_recipients_and_batch_size(tmp_path: Path) -> None:
    def digest(line: dict[str, Any], size: int = 500) -> str:
        job = one(tmp_path, line, size)
        assert isinstance(job, Job)
        return job.job_hash

    base = digest({**BASE, "ToMembers_Account": ["a", "b"]})
    assert base == digest({**BASE, "ToMembers_Account": ["a", "b"]})
    assert base != digest({**BASE, "ToMembers_Account": ["b", "a"]})
    assert base != digest({**BASE, "Content": "other", "ToMembers_Account": ["a", "b"]})
    assert base != digest({**BASE, "ToMembers_Account": ["a", "b"]}, size=1)
    assert digest(BASE) != digest({**BASE, "ToMembers_Account": ["a"]})


def test_blank_lines_are_skipped_and_numbering_kept(tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.jsonl", [BASE, "", "  ", {**BASE, "Content": "x"}])
    items = list(read_jobs([str(path)], 500))
    assert [i.line for i in items] == [1, 4]


def test_export_line_over_32_bytes_is_rejected_even_if_padded(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_bytes(b"peter\n" + b" " * 28 + b"amara\r\n")  # 33 bytes before the \r\n
    rej = rejected(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert rej.reason == "r.txt line 2: UserID must be at most 32 bytes"


def test_export_that_never_ends_a_line_is_rejected_at_once(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "r.txt")  # read whole lines, this took 22 GB and never ended
    rej = within(5, lambda: rejected(tmp_path, {**BASE, "recipients_file": "r.txt"}))
    assert (rej.field, rej.reason) == ("recipients_file", "r.txt line 1: UserID must be at most 32 bytes")


def test_jobs_line_over_64_mib_is_rejected_and_the_next_job_read(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"GroupId": "@TGS#g", "Content": "' + b"x" * (64 * 1024 * 1024) + b'"}\n')
        handle.write(b'{"GroupId": "@TGS#g", "Content": "short"}\n')
    first, second = read_jobs([str(path)], 500)
    assert isinstance(first, Rejection)
    assert (first.line, first.field) == (1, None)
    assert first.reason == "line is longer than 67,108,864 bytes, the most a job line may have"
    assert isinstance(second, Job)
    assert (second.line, second.fields["Content"]) == (2, "short")


def test_byte_order_marks_and_crlf_are_not_part_of_a_job_or_a_userid(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_bytes(BOM + b"peter\r\namara\r\n")
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(
        BOM
        + b'{"GroupId": "@TGS#g", "Content": "a", "recipients_file": "r.txt"}\r\n'
        + b'{"GroupId": "@TGS#g", "Content": "b"}\r\n'
    )
    first, second = read_jobs([str(path)], 500)
    assert isinstance(first, Job) and isinstance(second, Job)
    assert (first.line, second.line) == (1, 2)
    assert [b.recipients for b in split(first)] == [("peter", "amara")]


@pytest.mark.parametrize("content", [BOM, BOM + b"\r\n\r\n", BOM + b"\n  \n"])
def test_export_of_only_a_byte_order_mark_is_empty(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "r.txt").write_bytes(content)
    rej = rejected(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert rej.reason == "r.txt has no UserIDs; an empty export never means all members"


def test_byte_order_mark_on_standard_input(tmp_path: Path) -> None:
    result = subprocess.run(
        DISPATCHER("send", "-", "--dry-run", "--out", str(tmp_path / "out.jsonl")),
        input=BOM + b'{"GroupId": "@TGS#g", "Content": "hi", "ToMembers_Account": ["peter"]}\r\n',
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"jobs        1 (1 valid, 0 rejected)" in result.stdout


def test_export_from_a_fifo_is_read_once_and_sent_from_a_copy(tmp_path: Path) -> None:
    fifo(tmp_path / "r.txt", [b"b\na\n", b"b\r\n  c  \n"])  # like recipients_file: <(psql ...)
    job = within(5, lambda: one(tmp_path, {**BASE, "recipients_file": "r.txt"}, batch_size=2))
    assert isinstance(job, Job)
    assert job.recipient_count == 3
    # The writer wrote once and is gone: opening the FIFO again would wait for ever.
    assert within(5, lambda: [b.recipients for b in split(job)]) == [("b", "a"), ("c",)]
    assert within(5, lambda: [b.recipients for b in split(job)]) == [("b", "a"), ("c",)]
    (tmp_path / "plain.txt").write_text("b\na\nb\nc\n")
    plain = one(tmp_path, {**BASE, "recipients_file": "plain.txt"}, batch_size=2)
    assert isinstance(plain, Job)
    assert plain.job_hash == job.job_hash  # the same recipients, whether piped or in a file


def test_jobs_from_a_fifo_are_handed_on_as_they_arrive(tmp_path: Path) -> None:
    first_read = threading.Event()

    def pieces() -> Iterable[bytes]:
        yield BOM + b'{"GroupId": "@TGS#g", "Content": "one"}\n'
        first_read.wait(5)  # the writer is slow: the next job comes only after the first was read
        yield b'{"GroupId": "@TGS#g", "Content": "two"}\n'

    path = fifo(tmp_path / "jobs.jsonl", pieces())

    def read() -> list[str]:
        contents = []
        for item in read_jobs([str(path)], 500):
            assert isinstance(item, Job), item
            contents.append(str(item.fields["Content"]))
            first_read.set()
        return contents

    assert within(5, read) == ["one", "two"]


def test_stop_ends_an_endless_export_and_yields_nothing_of_its_job(tmp_path: Path) -> None:
    fifo(tmp_path / "r.txt", itertools.repeat(b"user1\n" * 1000))  # `yes user1`: valid, and never ends
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "r.txt"}])
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert within(5, lambda: list(read_jobs([str(path)], 500, stop=stop))) == []


def test_stop_ends_an_endless_jobs_stream(tmp_path: Path) -> None:
    jobs = (b'{"GroupId": "@TGS#g", "Content": "n%d"}\n' % i for i in itertools.count())
    path = fifo(tmp_path / "jobs.jsonl", jobs)
    stop = threading.Event()

    def read() -> int:
        count = 0
        for _item in read_jobs([str(path)], 500, stop=stop):
            count += 1
            if count == 3:
                stop.set()
        return count

    assert within(5, read) == 3  # nothing more is handed over once it is told to stop


@pytest.mark.parametrize(
    ("most", "over"),
    [
        ("x" * 12_288, "x" * 12_289),
        ("é" * 6_144, "é" * 6_144 + "x"),  # 2 bytes a character
        ("€" * 4_096, "€" * 4_095 + "éé"),  # 3 bytes a character
    ],
)
def test_content_of_12_kib_in_utf8_is_sent_and_a_byte_more_is_not(tmp_path: Path, most: str, over: str) -> None:
    job = one(tmp_path, {**BASE, "Content": most})
    assert isinstance(job, Job)
    assert job.fields["Content"] == most
    assert rejected(tmp_path, {**BASE, "Content": over}).reason == (
        "is 12,289 bytes; at most 12,288 bytes (UTF-8) can be sent"
    )


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"alice\nbob\n" + BOM + b"carol\n", 3),  # two exports joined: the second one's BOM stands mid-file
        (b"alice\rbob\rcarol\r", 1),  # `\r`-only line endings: one "line" with control characters in it
        (b"alice\nb\x00b\n", 2),
    ],
)
def test_export_with_control_or_invisible_characters_is_rejected(tmp_path: Path, content: bytes, line: int) -> None:
    (tmp_path / "r.txt").write_bytes(content)
    rej = rejected(tmp_path, {**BASE, "recipients_file": "r.txt"})
    assert rej.field == "recipients_file"
    assert f"r.txt line {line}: UserID must not contain control or invisible characters" in rej.message


def test_an_export_rewritten_during_the_run_is_sent_as_it_was_validated(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("".join(f"old{i:06d}\n" for i in range(1000)))
    job = one(tmp_path, {**BASE, "recipients_file": "r.txt"}, batch_size=100)
    assert isinstance(job, Job)
    # Rewritten in place, same size: nothing about the file tells that it changed.
    (tmp_path / "r.txt").write_text("".join(f"new{i:06d}\n" for i in range(1000)))
    sent = [uid for batch in split(job) for uid in batch.recipients or ()]
    assert sent == [f"old{i:06d}" for i in range(1000)]


def test_a_jobs_file_whose_name_is_not_utf8_is_read_and_named_printably(tmp_path: Path) -> None:
    name = os.fsdecode(b"jobs-\xff.jsonl")
    write_jobs(tmp_path / name, [BASE, {"Content": "x"}])
    items = list(read_jobs([str(tmp_path / name)], 500))
    assert isinstance(items[0], Job)
    assert isinstance(items[1], Rejection)
    assert items[1].job_id == "jobs-\ufffd.jsonl:2"
    orjson.dumps({"source": items[1].source, "job_id": items[1].job_id})  # recordable: no surrogates left
