"""Exports as warehouses write them: CSV, TSV, JSON Lines, Parquet; gzip and zstd; shards; a suppression list.

Every file is small and made here; every expectation is a literal. A mistake never widens who receives.
"""

from __future__ import annotations

import codecs
import gc
import gzip
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from tests.conftest import fifo, within, write_jobs

BASE = {"GroupId": "@TGS#g", "Content": "hello"}
BOM = b"\xef\xbb\xbf"


def read(tmp_path: Path, job: dict[str, Any], batch_size: int = 500) -> Job | Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [job]))], batch_size)
    return item


def sent(tmp_path: Path, job: dict[str, Any], batch_size: int = 500) -> list[tuple[str, ...]]:
    """The batches the job sends (fails if it is rejected)."""
    item = read(tmp_path, job, batch_size)
    assert isinstance(item, Job), item
    return [batch.recipients or () for batch in split(item)]


def refused(tmp_path: Path, job: dict[str, Any]) -> tuple[str | None, str]:
    item = read(tmp_path, job)
    assert isinstance(item, Rejection), item
    return item.field, item.reason


def zstd(data: bytes) -> bytes:
    out = pa.BufferOutputStream()
    with pa.CompressedOutputStream(out, "zstd") as stream:
        stream.write(data)
    return bytes(out.getvalue().to_pybytes())


CSV_TRICKY = (
    BOM
    + b"user_id,name,note\r\n"
    + b'peter,"Peter, the first","says ""hi"""\r\n'
    + b'"amara",Amara,"two\r\nlines"\r\n'
    + b"  jun  ,Jun,padded\r\n"
    + b"peter,Peter again,a duplicate\r\n"
    + b'"sofia,x",Sofia,"a comma in the ID"\r\n'
)


def test_a_csv_export_with_a_header_quotes_embedded_newlines_crlf_and_a_bom(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(CSV_TRICKY)
    job = {**BASE, "recipients_file": "r.csv", "recipients_column": "user_id"}
    assert sent(tmp_path, job, batch_size=3) == [("peter", "amara", "jun"), ("sofia,x",)]
    item = read(tmp_path, job)
    assert isinstance(item, Job)
    assert (item.recipient_count, item.duplicates, item.excluded) == (4, 1, 0)
    assert item.export is not None
    assert item.export.to_json() == {"files": 1, "rows": 5, "distinct": 4, "duplicates": 1, "excluded": 0}


def test_the_column_is_chosen_by_name_and_an_integer_column_keeps_its_text_in_csv(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("id,user\n007,ann\n42,bob\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "id"}) == [("007", "42")]
    assert sent(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "user"}) == [("ann", "bob")]


def test_a_file_of_one_column_needs_no_recipients_column(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("member\nann\nbob\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "r.csv"}) == [("ann", "bob")]


def test_a_tsv_export(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("uid\tcountry\nann\tSG\nbob, jr\tJP\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "r.tsv", "recipients_column": "uid"}) == [("ann", "bob, jr")]


@pytest.mark.parametrize("name", ["r.jsonl", "r.ndjson"])
def test_json_lines_one_object_a_line(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text('{"uid": "ann", "n": 1}\n{"uid": "bob", "n": 2}\n{"uid": "ann", "n": 3}\n')
    assert sent(tmp_path, {**BASE, "recipients_file": name, "recipients_column": "uid"}) == [("ann", "bob")]


def test_integer_ids_are_read_as_their_decimal_text(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"uid": 10023}\n{"uid": 9007199254740993}\n')
    assert sent(tmp_path, {**BASE, "recipients_file": "r.jsonl"}) == [("10023", "9007199254740993")]
    table = pa.table({"uid": pa.array([7, 123456789012], pa.int64()), "x": ["a", "b"]})
    pq.write_table(table, tmp_path / "r.parquet")
    job = {**BASE, "recipients_file": "r.parquet", "recipients_column": "uid"}
    assert sent(tmp_path, job) == [("7", "123456789012")]


def test_parquet_of_several_row_groups_is_read_in_row_order(tmp_path: Path) -> None:
    ids = [f"m{i:03d}" for i in range(250)] + ["m000", "m001"]
    pq.write_table(pa.table({"uid": ids, "score": list(range(252))}), tmp_path / "r.parquet", row_group_size=40)
    assert pq.ParquetFile(tmp_path / "r.parquet").num_row_groups == 7
    batches = sent(tmp_path, {**BASE, "recipients_file": "r.parquet", "recipients_column": "uid"}, batch_size=100)
    assert [len(b) for b in batches] == [100, 100, 50]
    assert batches[0][:3] == ("m000", "m001", "m002")
    assert batches[2][-1] == "m249"


def test_shards_of_ids_of_one_length_each_are_read_whole_and_meet_their_repeats(tmp_path: Path) -> None:
    # A batch whose IDs are all of one length is laid out as lines in one copy: each shard here is one batch.
    groups = [["a", "b", "a"], ["x" * 8, "y" * 8], ["u00000000001", "u00000000002", "u00000000001"]]
    groups += [["p" * 16, "q" * 16], ["z" * 32, "z" * 32, "a"], [" c ", "d  "], ["e" * 31]]
    for at, group in enumerate(groups):
        pq.write_table(pa.table({"uid": group}), tmp_path / f"part-{at}.parquet")
    expected = ("a", "b", "x" * 8, "y" * 8, "u00000000001", "u00000000002", "p" * 16, "q" * 16, "z" * 32, "c", "d")
    assert sent(tmp_path, {**BASE, "recipients_file": "part-*.parquet"}) == [(*expected, "e" * 31)]


def test_compressed_exports_of_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"uid\nann\nbob\n"))
    (tmp_path / "b.jsonl.zst").write_bytes(zstd(b'{"uid": "cat"}\n{"uid": "dan"}\n'))
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"eve\r\n  fay \n"))
    (tmp_path / "d.txt.zst").write_bytes(zstd(b"gus\nhal\n"))
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"uid": ["ivy", "jon"]}), buffer)
    (tmp_path / "e.parquet.gz").write_bytes(gzip.compress(buffer.getvalue().to_pybytes()))
    expected = {
        "a.csv.gz": ("ann", "bob"),
        "b.jsonl.zst": ("cat", "dan"),
        "c.txt.gz": ("eve", "fay"),
        "d.txt.zst": ("gus", "hal"),
        "e.parquet.gz": ("ivy", "jon"),
    }
    for name, ids in expected.items():
        assert sent(tmp_path, {**BASE, "recipients_file": name}) == [ids], name


def test_recipients_format_reads_a_file_whose_name_does_not_say(tmp_path: Path) -> None:
    (tmp_path / "export").write_bytes(gzip.compress(b"uid,x\nann,1\nbob,2\n"))  # compression from its first bytes
    job = {**BASE, "recipients_file": "export", "recipients_format": "csv", "recipients_column": "uid"}
    assert sent(tmp_path, job) == [("ann", "bob")]
    # One UserID a line, though named .csv (as every export was read before formats): the job says so.
    (tmp_path / "ids.csv").write_text("ann\nbob\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "ids.csv", "recipients_format": "text"}) == [("ann", "bob")]
    # Without it, a name that says a format is read as that format, and a header is not a recipient.
    assert sent(tmp_path, {**BASE, "recipients_file": "ids.csv"}) == [("bob",)]
    (tmp_path / "r.jsonl").write_text("uid\nann\n")  # misnamed: it is a CSV file
    assert sent(tmp_path, {**BASE, "recipients_file": "r.jsonl", "recipients_format": "csv"}) == [("ann",)]


def test_shards_of_a_glob_are_one_export_in_sorted_order_first_occurrence_wins(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    # Written in another order than their names sort in: the names decide.
    (tmp_path / "out" / "export-000000000002.csv").write_text("uid\ncat\nann\n")
    (tmp_path / "out" / "export-000000000000.csv").write_text("uid\nann\nbob\n")
    (tmp_path / "out" / "export-000000000001.csv").write_text("uid\nbob\ndan\n")
    job = {**BASE, "recipients_file": "out/export-*.csv"}
    assert sent(tmp_path, job, batch_size=3) == [("ann", "bob", "dan"), ("cat",)]
    item = read(tmp_path, job)
    assert isinstance(item, Job) and item.export is not None
    assert item.export.files == (
        "out/export-000000000000.csv",
        "out/export-000000000001.csv",
        "out/export-000000000002.csv",
    )
    assert (item.export.rows, item.export.distinct, item.duplicates) == (6, 4, 2)


def test_a_glob_that_matches_nothing_is_never_all_members(tmp_path: Path) -> None:
    assert refused(tmp_path, {**BASE, "recipients_file": "out/export-*.csv.gz"}) == (
        "recipients_file",
        "out/export-*.csv.gz matches no file; a glob that matches nothing never means all members",
    )


def test_a_name_that_exists_as_written_is_that_file_whatever_characters_it_holds(tmp_path: Path) -> None:
    (tmp_path / "list[1].txt").write_text("ann\n")
    (tmp_path / "list1.txt").write_text("bob\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "list[1].txt"}) == [("ann",)]


def test_shards_of_more_than_one_format_are_refused(tmp_path: Path) -> None:
    (tmp_path / "part-0.csv").write_text("uid\nann\n")
    (tmp_path / "part-1.jsonl").write_text('{"uid": "bob"}\n')
    assert refused(tmp_path, {**BASE, "recipients_file": "part-*"}) == (
        "recipients_file",
        "part-* matches files of more than one format (part-0.csv is csv, part-1.jsonl is jsonl); "
        "the files of an export are of one format",
    )


def test_a_column_the_file_lacks_is_refused_naming_the_file_the_column_and_its_columns(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,email\nann,a@x\n")
    assert refused(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "userid"}) == (
        "recipients_column",
        "r.csv has no column 'userid'; its columns: 'user_id', 'email'",
    )
    assert refused(tmp_path, {**BASE, "recipients_file": "r.csv"}) == (
        "recipients_column",
        "is required: r.csv has 2 columns ('user_id', 'email'); name the one with the UserIDs",
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("r.csv", b'uid\nann\n""\nbob\n', "r.csv row 2: UserID must not be empty"),
        ("r.csv", b"uid,x\nann,1\n   ,2\n", "r.csv row 2: UserID must not be empty"),
        (
            "r.csv",
            b'uid\nann\n"b\nob"\n',
            "r.csv row 2: UserID must not contain control or invisible characters (a damaged export?)",
        ),
        ("r.jsonl", b'{"uid": "ann"}\n{"uid": null}\n', "r.jsonl row 2: no UserID (the value is null or missing)"),
        ("r.jsonl", b'{"uid": "ann"}\n{"other": 1}\n', "r.jsonl row 2: no UserID (the value is null or missing)"),
        ("r.csv", b"uid\n" + b"x" * 33 + b"\n", "r.csv row 1: UserID must be at most 32 bytes"),
    ],
)
def test_a_null_empty_or_bad_value_rejects_the_job_with_its_file_and_row(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    assert refused(tmp_path, {**BASE, "recipients_file": name, "recipients_column": "uid"}) == (
        "recipients_file",
        reason,
    )


def test_a_row_is_counted_in_records_not_lines(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(b'uid,note\nann,"a\nlong\nnote"\nbob,x\n,y\n')
    assert refused(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "uid"}) == (
        "recipients_file",
        "r.csv row 3: UserID must not be empty",
    )


def test_a_null_in_parquet_names_its_row_across_row_groups(tmp_path: Path) -> None:
    pq.write_table(pa.table({"uid": ["a", "b", "c", None, "e"]}), tmp_path / "r.parquet", row_group_size=2)
    assert refused(tmp_path, {**BASE, "recipients_file": "r.parquet"}) == (
        "recipients_file",
        "r.parquet row 4: no UserID (the value is null or missing)",
    )


def test_a_column_of_another_type_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"uid": [1.5, 2.0]}), tmp_path / "r.parquet")
    assert refused(tmp_path, {**BASE, "recipients_file": "r.parquet"}) == (
        "recipients_file",
        "r.parquet: column 'uid' holds double, not UserIDs (text or whole numbers)",
    )


def test_an_exclude_file_is_never_sent_and_is_counted(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("uid\nann\nbob\ncat\nbob\ndan\n")
    (tmp_path / "unsubscribed.txt").write_text("cat\nzed\n")
    job = {**BASE, "recipients_file": "r.csv", "exclude_file": "unsubscribed.txt"}
    assert sent(tmp_path, job) == [("ann", "bob", "dan")]
    item = read(tmp_path, job)
    assert isinstance(item, Job) and item.export is not None
    assert (item.recipient_count, item.duplicates, item.excluded) == (3, 1, 1)
    assert item.export.to_json() == {
        "files": 1,
        "rows": 5,
        "distinct": 4,
        "duplicates": 1,
        "excluded": 1,
        "exclude_files": 1,
        "exclude_rows": 2,
    }


def test_an_exclude_file_of_its_own_format_column_and_shards(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("ann\nbob\ncat\ndan\n")
    (tmp_path / "blocked-1.dat").write_text('{"who": "ann", "why": "spam"}\n')
    (tmp_path / "blocked-2.dat").write_text('{"who": "dan", "why": "asked"}\n')
    job = {
        **BASE,
        "recipients_file": "r.txt",
        "exclude_file": "blocked-*.dat",
        "exclude_format": "jsonl",
        "exclude_column": "who",
    }
    assert sent(tmp_path, job) == [("bob", "cat")]


def test_an_exclude_file_applies_to_a_list_given_in_the_job(tmp_path: Path) -> None:
    (tmp_path / "unsubscribed.txt").write_text("jun\n")
    job = {**BASE, "ToMembers_Account": ["peter", "jun", "amara", "peter"], "exclude_file": "unsubscribed.txt"}
    assert sent(tmp_path, job) == [("peter", "amara")]
    item = read(tmp_path, job)
    assert isinstance(item, Job)
    assert (item.recipient_count, item.duplicates, item.excluded) == (2, 1, 1)


def test_an_export_whose_every_recipient_is_excluded_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("ann\nbob\n")
    (tmp_path / "x.txt").write_text("bob\nann\n")
    assert refused(tmp_path, {**BASE, "recipients_file": "r.txt", "exclude_file": "x.txt"}) == (
        "exclude_file",
        "every recipient (2) is in x.txt; nothing is left to send",
    )


@pytest.mark.parametrize(
    ("job", "field", "reason"),
    [
        (
            {"exclude_file": "x.txt"},
            "exclude_file",
            "needs named recipients; a job sent to all members cannot leave anyone out",
        ),
        ({"recipients_column": "uid"}, "recipients_column", "applies to a recipients_file; the job has none"),
        (
            {"ToMembers_Account": ["a"], "exclude_column": "uid"},
            "exclude_column",
            "applies to an exclude_file; the job has none",
        ),
        (
            {"recipients_file": "r.txt", "recipients_format": "xlsx"},
            "recipients_format",
            "must be one of text, csv, tsv, jsonl, parquet, not 'xlsx'",
        ),
        (
            {"recipients_file": "r.txt", "recipients_format": "text", "recipients_column": "uid"},
            "recipients_column",
            "a text export (one UserID a line) has no columns",
        ),
        ({"recipients_file": "r.txt", "exclude_file": None}, "exclude_file", "must be a string, not null"),
        (
            {"recipients_file": "r.txt", "recipient_column": "uid"},
            "recipient_column",
            "unknown key (did you mean recipients_column?)",
        ),
    ],
)
def test_export_fields_are_checked(tmp_path: Path, job: dict[str, Any], field: str, reason: str) -> None:
    (tmp_path / "r.txt").write_text("ann\n")
    (tmp_path / "r.jsonl").write_text('{"uid": "ann"}\n')
    got_field, got_reason = refused(tmp_path, {**BASE, **job})
    assert got_field == field
    assert got_reason.startswith(reason)


def test_a_group_message_takes_no_exclude_file(tmp_path: Path) -> None:
    job = {"api": "send_group_msg", "GroupId": "@TGS#g", "Text": "hi", "exclude_file": "x.txt"}
    field, reason = refused(tmp_path, job)
    assert field == "exclude_file"
    assert reason.startswith("send_group_msg sends one message to every member of the group and takes no recipients")


def test_the_job_hash_covers_every_shard_and_the_suppression_list(tmp_path: Path) -> None:
    (tmp_path / "p-0.csv").write_text("uid\nann\nbob\n")
    (tmp_path / "x.txt").write_text("zed\n")
    job = {**BASE, "job_id": "j", "recipients_file": "p-*.csv", "exclude_file": "x.txt"}

    def job_hash() -> str:
        item = read(tmp_path, job)
        assert isinstance(item, Job), item
        return item.job_hash

    first = job_hash()
    # blake2b-128 of the API's head, b"\x00export\n", the export fields as sorted JSON and a newline, then
    # for each file (recipients first) its field and name as JSON and the blake2b-128 of its IDs, one a line.
    assert first == "bd5cde6e59e292ed977d8115044d0511"
    (tmp_path / "p-1.csv").write_text("uid\nbob\n")  # only a duplicate: the batches are the same
    with_shard = job_hash()
    (tmp_path / "x.txt").write_text("zed\nyan\n")  # nobody of the export: the batches are the same
    with_exclusion = job_hash()
    (tmp_path / "p-1.csv").write_text("uid\ncat\n")
    changed_shard = job_hash()
    assert len({first, with_shard, with_exclusion, changed_shard}) == 4


def test_a_plain_text_export_keeps_its_hash_when_named_text_or_duplicated(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("b\na\nb\nc\n")
    plain = read(tmp_path, {**BASE, "recipients_file": "r.txt"})
    named = read(tmp_path, {**BASE, "recipients_file": "r.txt", "recipients_format": "text"})
    inline = read(tmp_path, {**BASE, "ToMembers_Account": ["b", "a", "c"]})
    assert isinstance(plain, Job) and isinstance(named, Job) and isinstance(inline, Job)
    # blake2b-128 of orjson.dumps(["@TGS#g", "hello", None, False, 500]) + b"b\na\nc\n", as ever
    assert plain.job_hash == named.job_hash == inline.job_hash == "749300d8f9c46c36757e34e672499dfb"
    # "auto-" + blake2b-64 of orjson.dumps(["@TGS#g", None, "hello", {"recipients_file": "r.txt"}])
    assert plain.job_id == named.job_id == "auto-2dfbffc6e6d49b43"


def test_a_csv_export_from_a_fifo_is_copied_then_read(tmp_path: Path) -> None:
    fifo(tmp_path / "r", [b"uid,x\nann,1\n", b"bob,2\nann,3\n"])
    job = {**BASE, "recipients_file": "r", "recipients_format": "csv", "recipients_column": "uid"}
    assert within(10, lambda: sent(tmp_path, job)) == [("ann", "bob")]


def test_parquet_from_a_fifo_is_copied_to_a_temporary_file_first(tmp_path: Path) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"uid": ["ann", "bob"]}), buffer, row_group_size=1)
    fifo(tmp_path / "r", [buffer.getvalue().to_pybytes()])
    job = {**BASE, "recipients_file": "r", "recipients_format": "parquet"}
    assert within(10, lambda: sent(tmp_path, job)) == [("ann", "bob")]


def test_a_gzipped_text_export_from_a_fifo_is_read_as_a_stream(tmp_path: Path) -> None:
    data = gzip.compress(b"ann\nbob\nann\n")
    fifo(tmp_path / "r.txt.gz", [data[:10], data[10:]])
    assert within(10, lambda: sent(tmp_path, {**BASE, "recipients_file": "r.txt.gz"})) == [("ann", "bob")]


def test_a_pre_scan_leaves_a_stream_of_any_format_alone(tmp_path: Path) -> None:
    from dispatcher.jobs.reader import StreamedExport

    os.mkfifo(tmp_path / "r")
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "r", "recipients_format": "csv"}])
    with pytest.raises(StreamedExport):
        list(read_jobs([str(path)], 500, streams=False))


def test_stop_ends_the_reading_of_a_table_export_and_yields_nothing_of_its_job(tmp_path: Path) -> None:
    import itertools

    fifo(tmp_path / "r", itertools.chain([b"uid\n"], itertools.repeat(b"ann\n" * 1000)))
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "r", "recipients_format": "csv"}])
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert within(10, lambda: list(read_jobs([str(path)], 500, stop=stop))) == []


# Exports as spreadsheets save them (issue 24): the encoding, the separator, a column named twice, and a
# JSON Lines column of text and integers. Each ends as that job's rejection (or is read), never a traceback.

UTF16_CSV = "user_id,name\r\nann,Ann\r\nbob,Bj\u00f6rn\r\n"


@pytest.mark.parametrize(
    ("name", "content", "job"),
    [
        ("r.csv", UTF16_CSV.encode("utf-16"), {"recipients_column": "user_id"}),  # little-endian, as Excel
        ("r.csv", codecs.BOM_UTF16_BE + UTF16_CSV.encode("utf-16-be"), {"recipients_column": "user_id"}),
        ("r.csv.gz", gzip.compress(UTF16_CSV.encode("utf-16")), {"recipients_column": "user_id"}),
        ("r.tsv", "user_id\tname\r\nann\tAnn\r\nbob\tBob\r\n".encode("utf-16"), {"recipients_column": "user_id"}),
        ("r.jsonl", '{"uid": "ann"}\n{"uid": "bob"}\n'.encode("utf-16"), {}),
        ("r.txt", "ann\r\nbob\r\n".encode("utf-16"), {}),
    ],
    ids=["csv", "csv-big-endian", "csv-gzip", "tsv", "jsonl", "text"],
)
def test_a_utf16_export_with_a_byte_order_mark_is_read_as_its_utf8_copy_would_be(
    tmp_path: Path, name: str, content: bytes, job: dict[str, Any]
) -> None:
    (tmp_path / name).write_bytes(content)
    utf16 = read(tmp_path, {**BASE, "recipients_file": name, **job})
    assert isinstance(utf16, Job), utf16
    assert [batch.recipients for batch in split(utf16)] == [("ann", "bob")]
    # Saved again as UTF-8, it is the same job: a resume after re-saving it goes on.
    if name.endswith(".gz"):
        (tmp_path / name).write_bytes(gzip.compress(gzip.decompress(content).decode("utf-16").encode("utf-8")))
    else:
        (tmp_path / name).write_bytes(content.decode("utf-16").encode("utf-8"))
    utf8 = read(tmp_path, {**BASE, "recipients_file": name, **job})
    assert isinstance(utf8, Job), utf8
    assert utf16.job_hash == utf8.job_hash


def test_a_utf16_exclude_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id\nann\nbob\ncat\n")
    (tmp_path / "unsubscribed.csv").write_bytes("user_id\tat\r\nbob\t2026-11-01\r\n".encode("utf-16"))
    job = {
        **BASE,
        "recipients_file": "r.csv",
        "exclude_file": "unsubscribed.csv",
        "exclude_format": "tsv",
        "exclude_column": "user_id",
    }
    assert sent(tmp_path, job) == [("ann", "cat")]


@pytest.mark.parametrize(
    ("name", "content", "field", "reason"),
    [
        (
            "r.csv",
            "user_id\nann\n".encode("utf-32"),
            "recipients_file",
            "r.csv: the file is UTF-32 (it starts with a UTF-32 byte-order mark); save it as UTF-8",
        ),
        (
            "r.txt",
            "ann\n".encode("utf-32"),
            "recipients_file",
            "r.txt: the file is UTF-32 (it starts with a UTF-32 byte-order mark); save it as UTF-8",
        ),
        (
            "r.csv",
            codecs.BOM_UTF16_LE + "uid\n".encode("utf-16-le") + b"\x00\xd8" + "a\n".encode("utf-16-le"),
            "recipients_file",
            "r.csv: not valid UTF-16 (illegal UTF-16 surrogate); save it as UTF-8",
        ),
        (
            "r.txt",
            codecs.BOM_UTF16_LE + "ann\n".encode("utf-16-le") + b"\x00\xd8" + "a\n".encode("utf-16-le"),
            "recipients_file",
            "r.txt: not valid UTF-16 (illegal UTF-16 surrogate); save it as UTF-8",
        ),
        (
            "r.csv",
            "n\u00e4me;user_id\nx;ann\n".encode("cp1252"),
            "recipients_file",
            "r.csv: its column names are not UTF-8 (byte 0xe4); save it as UTF-8 (Excel: CSV UTF-8)",
        ),
        (
            "r.jsonl",
            '{"n\u00e4me": "x", "uid": "ann"}\n'.encode("cp1252"),
            "recipients_file",
            "r.jsonl: its column names are not UTF-8 (byte 0xe4); save it as UTF-8",
        ),
        ("r.csv", "uid\nann\nbj\u00f6rn\n".encode("cp1252"), "recipients_file", "r.csv row 2: not valid UTF-8"),
        (
            "r.jsonl",
            b'{"uid": "a1"}\n{"uid": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
            "recipients_file",
            "r.jsonl row 2: nested too deeply to be read",
        ),
    ],
    ids=[
        "utf32-csv",
        "utf32-text",
        "bad-utf16-csv",
        "bad-utf16-text",
        "cp1252-header",
        "cp1252-jsonl-key",
        "cp1252-value",
        "deep-jsonl-value",
    ],
)
def test_an_export_in_another_encoding_is_refused_in_one_line_naming_the_file(
    tmp_path: Path, name: str, content: bytes, field: str, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    column = {} if name.endswith(".txt") else {"recipients_column": "uid"}
    assert refused(tmp_path, {**BASE, "recipients_file": name, **column}) == (field, reason)


def test_an_exclude_file_in_another_encoding_rejects_the_job_naming_its_field(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("ann\n")
    (tmp_path / "x.csv").write_bytes("user_id;gr\u00fcnde\nann;x\n".encode("cp1252"))
    job = {**BASE, "recipients_file": "r.txt", "exclude_file": "x.csv", "exclude_column": "user_id"}
    assert refused(tmp_path, job) == (
        "exclude_file",
        "x.csv: its column names are not UTF-8 (byte 0xfc); save it as UTF-8 (Excel: CSV UTF-8)",
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        (
            "r.csv",
            b"name;email\r\nal;a@x\r\nbo;b@x\r\n",
            "is required: r.csv has one column, 'name;email', and its name holds ';': is the file separated by "
            "';', as Excel writes CSV in many locales? Save it separated by commas, or name the column to read "
            "it as it is",
        ),
        (
            "r.csv",
            b"user_id\nann\nal;a@x\n",
            "is required: r.csv row 2 holds ';' ('al;a@x'): is the file separated by ';', as Excel writes CSV "
            "in many locales? Save it separated by commas, or name the column to read it as it is",
        ),
        (
            "r.csv",
            b"name|email\nal|a@x\n",
            "is required: r.csv has one column, 'name|email', and its name holds '|': is the file separated by "
            "'|'? Save it separated by commas, or name the column to read it as it is",
        ),
        (
            "r.csv",
            b"name\temail\nal\ta@x\n",
            "is required: r.csv has one column, 'name\\temail', and its name holds a tab: is the file separated "
            'by tabs? Read it as TSV ("recipients_format": "tsv"), or name the column to read it as it is',
        ),
        (
            "r.tsv",
            b"name,email\nal,a@x\n",
            "is required: r.tsv has one column, 'name,email', and its name holds a comma: is the file separated "
            'by commas? Read it as CSV ("recipients_format": "csv"), or name the column to read it as it is',
        ),
    ],
    ids=["semicolon-header", "semicolon-value", "pipe", "tab-in-csv", "comma-in-tsv"],
)
def test_a_file_read_as_one_column_whose_text_holds_another_separator_is_refused_with_a_hint(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    assert refused(tmp_path, {**BASE, "recipients_file": name}) == ("recipients_column", reason)


def test_a_column_named_by_the_job_is_read_as_it_is_whatever_it_holds(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(b"user_id\nann\nal;x\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "user_id"}) == [("ann", "al;x")]
    (tmp_path / "plain.csv").write_bytes(b"user_id\r\nann\r\n  bob\t\r\n")  # white space around an ID is no separator
    assert sent(tmp_path, {**BASE, "recipients_file": "plain.csv"}) == [("ann", "bob")]


def test_a_semicolon_separated_csv_and_a_column_it_lacks_are_refused_naming_its_columns(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(b"user_id;name\nann;Ann\n")
    assert refused(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "user_id"}) == (
        "recipients_column",
        "r.csv has no column 'user_id'; its columns: 'user_id;name': is the file separated by ';', as Excel "
        "writes CSV in many locales? Save it separated by commas",
    )


@pytest.mark.parametrize(
    ("name", "content", "job", "reason"),
    [
        (
            "r.csv",
            b"user_id,user_id\nann,bob\n",
            {"recipients_column": "user_id"},
            "r.csv has 2 columns named 'user_id'; which one holds the UserIDs is ambiguous: rename the others",
        ),
        (
            "r.parquet",
            None,
            {"recipients_column": "uid"},
            "r.parquet has 2 columns named 'uid'; which one holds the UserIDs is ambiguous: rename the others",
        ),
    ],
    ids=["csv", "parquet"],
)
def test_a_column_named_twice_is_refused_when_it_is_the_one_read(
    tmp_path: Path, name: str, content: bytes | None, job: dict[str, Any], reason: str
) -> None:
    if content is None:
        table = pa.Table.from_arrays([pa.array(["ann"]), pa.array(["bob"])], names=["uid", "uid"])
        pq.write_table(table, tmp_path / name)
    else:
        (tmp_path / name).write_bytes(content)
    assert refused(tmp_path, {**BASE, "recipients_file": name, **job}) == ("recipients_column", reason)


def test_a_json_lines_field_given_twice_in_a_row_is_refused_only_if_it_is_the_one_read(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_bytes(b'{"uid": "ann", "n": 1}\n{"uid": "bob", "uid": "eve", "n": 2}\n')
    assert refused(tmp_path, {**BASE, "recipients_file": "r.jsonl", "recipients_column": "uid"}) == (
        "recipients_file",
        "r.jsonl row 2: the field 'uid' is given twice; which one holds the UserID is ambiguous",
    )
    (tmp_path / "r.jsonl").write_bytes(b'{"uid": "ann", "n": 1}\n{"uid": "bob", "n": 2, "n": 3}\n')
    assert sent(tmp_path, {**BASE, "recipients_file": "r.jsonl", "recipients_column": "uid"}) == [("ann", "bob")]
    (tmp_path / "r.csv").write_bytes(b"user_id,x,x\nann,1,2\n")
    assert sent(tmp_path, {**BASE, "recipients_file": "r.csv", "recipients_column": "user_id"}) == [("ann",)]


def test_a_json_lines_field_of_text_and_integers_reads_each_integer_as_its_decimal_text(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_bytes(b'{"uid": "a1"}\n{"uid": 7}\n{"uid": "007"}\n{"uid": -12}\n')
    assert sent(tmp_path, {**BASE, "recipients_file": "r.jsonl"}) == [("a1", "7", "007", "-12")]
    # Across the blocks the file is read in: 30,000 rows of text, then integers.
    rows = (
        b"".join(b'{"uid": "m%05d"}\n' % i for i in range(30_000)) + b'{"uid": 10023}\n{"uid": 18446744073709551615}\n'
    )
    (tmp_path / "r.jsonl").write_bytes(rows)
    batches = sent(tmp_path, {**BASE, "recipients_file": "r.jsonl"})
    assert batches[-1][-2:] == ("10023", "18446744073709551615")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"uid": "a1"}\n{"uid": 7.5}\n', "r.jsonl row 2: 'uid' holds a number that is not whole (7.5), not a UserID"),
        (b'{"uid": 7}\n{"uid": 1e3}\n', "r.jsonl row 2: 'uid' holds a number that is not whole (1e3), not a UserID"),
        (b'{"uid": "a1"}\n{"uid": true}\n', "r.jsonl row 2: 'uid' holds true, not a UserID"),
        (b'{"uid": "a1"}\n\n{"uid": ["b"]}\n', "r.jsonl row 2: 'uid' holds an array, not a UserID"),
        (b'{"uid": "a1"}\n{"uid": 7}\n{"uid": ""}\n', "r.jsonl row 3: UserID must not be empty"),
        (b'{"uid": "a1"}\n{"uid": 7}\n[1]\n', "r.jsonl row 3: not a JSON object"),
        (b'{"uid": "a1"}\n{"uid": 7}\n{"uid": \n', "r.jsonl row 3: not valid JSON (Expecting value)"),
    ],
    ids=["fraction", "exponent", "boolean", "array", "empty", "not-an-object", "not-json"],
)
def test_a_json_lines_field_of_mixed_types_is_refused_at_the_first_value_that_is_no_userid(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    (tmp_path / "r.jsonl").write_bytes(content)
    assert refused(tmp_path, {**BASE, "recipients_file": "r.jsonl"}) == ("recipients_file", reason)


ROWS = b"".join(b"m%06d\n" % i for i in range(50_000))
JSON_ROWS = b"".join(b'{"uid": "m%06d"}\n' % i for i in range(50_000))


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        (
            "r.csv.gz",
            gzip.compress(b"uid\n" + ROWS)[:3000],
            "r.csv.gz: cannot read as csv: Truncated compressed stream",
        ),
        ("r.jsonl.zst", zstd(JSON_ROWS)[:3000], "r.jsonl.zst: cannot read as jsonl: Truncated compressed stream"),
        ("r.txt.zst", zstd(ROWS)[:3000], "r.txt.zst: cannot read: Truncated compressed stream"),
        ("r.csv.gz", b"uid\nann\n", "r.csv.gz: cannot read as csv: zlib inflate failed: incorrect header check"),
        (
            "r.parquet",
            b"PAR1 not parquet",
            "r.parquet: cannot read as parquet: Parquet magic bytes not found in footer. Either the file is "
            "corrupted or this is not a parquet file.",
        ),
        (
            "r.jsonl",
            b'{"uid": "a1"}\n{"uid": "' + b"a" * 262_133 + b'"}\n',  # 262,145 bytes
            "r.jsonl row 2: a line longer than 262,144 bytes, its newline included",
        ),
        (
            "r.jsonl",
            b'{"uid": "a1"}\n{"uid": "' + b"a" * 262_132 + b'"}\n',  # 262,144 bytes: read, and judged
            "r.jsonl row 2: UserID must be at most 32 bytes",
        ),
    ],
    ids=[
        "truncated-gzip",
        "truncated-zstd",
        "truncated-zstd-text",
        "not-gzip",
        "not-parquet",
        "long-line",
        "longest-line",
    ],
)
def test_an_export_pyarrow_cannot_read_rejects_its_job_in_one_line(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    column = {} if ".txt" in name else {"recipients_column": "uid"}
    assert refused(tmp_path, {**BASE, "recipients_file": name, **column}) == ("recipients_file", reason)


def test_a_suppression_list_read_as_one_column_that_holds_a_semicolon_is_refused(tmp_path: Path) -> None:
    # Read as one column, 'bob;2026-11-01' would exclude nobody: bob would be sent to.
    (tmp_path / "r.txt").write_text("ann\nbob\n")
    (tmp_path / "x.csv").write_bytes(b"user_id;at\r\nbob;2026-11-01\r\n")
    assert refused(tmp_path, {**BASE, "recipients_file": "r.txt", "exclude_file": "x.csv"}) == (
        "exclude_column",
        "is required: x.csv has one column, 'user_id;at', and its name holds ';': is the file separated by ';', "
        "as Excel writes CSV in many locales? Save it separated by commas, or name the column to read it as it is",
    )


def test_a_refused_json_lines_export_leaves_no_thread_of_its_reading_behind(tmp_path: Path) -> None:
    # Left to the garbage collector, the parser's thread was joined wherever a collection ran: once inside
    # the start of another thread, which never started (the run hung).
    (tmp_path / "r.jsonl").write_bytes(b'{"uid": "a1"}\n{"uid": ""}\n')
    gc.disable()
    try:
        assert refused(tmp_path, {**BASE, "recipients_file": "r.jsonl"}) == (
            "recipients_file",
            "r.jsonl row 2: UserID must not be empty",
        )
        assert [t.name for t in threading.enumerate() if t.name.startswith("dispatcher-")] == []
    finally:
        gc.enable()
