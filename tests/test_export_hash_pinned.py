"""Journals written before exports had formats: a plain text export's job hash and batches, pinned as literals.

Written on the reader of 3813d17 (one UserID a line, a dict of the IDs seen) before it was replaced; a
journal of that version resumes only while these hold, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import read_jobs
from tests.conftest import write_jobs

BOM = b"\xef\xbb\xbf"
# Everything the text reader does to a line: a byte-order mark, CRLF and LF, white space around an ID,
# blank and white-space-only lines, duplicates (padded and not), UTF-8 beyond ASCII, a 32-byte ID, and
# a last line without its newline.
EXPORT = (
    BOM
    + b"peter\r\n"
    + b"  amara\t\n"
    + b"\n"
    + b"   \r\n"
    + b"peter\n"
    + "jos\u00e9\n".encode()
    + b"x" * 32
    + b"\n"
    + b" amara\n"
    + "\u674e\u96f7".encode()
    + b"\n"
    + b"last"
)
RECIPIENTS = ["peter", "amara", "jos\u00e9", "x" * 32, "\u674e\u96f7", "last"]


def read_one(tmp_path: Path, job: dict[str, object], batch_size: int) -> Job:
    (tmp_path / "r.txt").write_bytes(EXPORT)
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [job]))], batch_size)
    assert isinstance(item, Job), item
    return item


def test_a_text_exports_hash_and_batches_are_those_journals_were_written_with(tmp_path: Path) -> None:
    job = read_one(tmp_path, {"GroupId": "@TGS#g", "Content": "hi", "recipients_file": "r.txt"}, 4)
    assert (job.job_id, job.job_hash, job.recipient_count) == (
        "auto-cfe1e9f38288bbaf",
        "f56c87ee0c92a1eb7f03f818c2e96349",
        6,
    )
    assert [batch.recipients for batch in split(job)] == [tuple(RECIPIENTS[:4]), tuple(RECIPIENTS[4:])]


def test_a_one_to_one_text_exports_hash_and_batches_are_those_journals_were_written_with(tmp_path: Path) -> None:
    job = read_one(tmp_path, {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "recipients_file": "r.txt"}, 500)
    assert (job.job_hash, job.recipient_count) == ("fb04efa22c608affff99f9e8121d8fd4", 6)
    assert [batch.recipients for batch in split(job)] == [tuple(RECIPIENTS)]
