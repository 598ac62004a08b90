"""The bounded-memory reading of an export: exact whatever the fingerprints do, the same in memory and spilled,
and a text export read by the fast path exactly as the rules read it line by line."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs import dedup
from dispatcher.jobs.dedup import Drops, Records, clean_of, resolve
from dispatcher.jobs.exports import ExportError
from dispatcher.jobs.formats import text as text_format
from dispatcher.jobs.reader import read_jobs
from dispatcher.tim.apis.base import Reject
from tests.conftest import write_jobs

BASE = {"GroupId": "@TGS#g", "Content": "hello"}


def first_occurrences(ids: list[str], excluded: set[str] | None = None) -> list[str]:
    """The oracle: each ID once, first occurrence first, none of `excluded`."""
    return [uid for uid in dict.fromkeys(ids) if uid not in (excluded or set())]


def kept(ids: list[str], excluded: list[str] | None = None) -> tuple[list[str], int, int]:
    """What the engine keeps of `ids` (fed in blocks of 7), with its duplicates and excluded counts."""
    drops = Drops()
    export = Records(drops)
    for at in range(0, len(ids), 7):
        export.add(clean_of("".join(uid + "\n" for uid in ids[at : at + 7]).encode()))
    exclusions = None
    if excluded is not None:
        exclusions = Records(None)
        exclusions.add(clean_of("".join(uid + "\n" for uid in excluded).encode()))
    outcome = resolve(export, drops, exclusions)
    bits = outcome.drops
    left = [uid for row, uid in enumerate(ids) if bits is None or not bits[row >> 3] >> (row & 7) & 1]
    return left, outcome.duplicates, outcome.excluded


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flushes of 8 rows, spilled past 64 bytes, compared 16 records at a time: every path of the engine."""
    monkeypatch.setattr(dedup, "_FLUSH_ROWS", 8)
    monkeypatch.setattr(dedup, "_KEPT_BYTES", 64)
    monkeypatch.setattr(dedup, "_GROUP_ROWS", 16)


def collide_all(recs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    return np.zeros(len(recs), np.uint64)


def collide_some(recs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    return (recs[:, 0] % np.uint64(3)) << np.uint64(62)  # three fingerprints, in three ranges


def test_first_occurrence_wins_across_flushes_and_the_temporary_file(tiny: None) -> None:
    ids = ["b", "a", "b", "c", "a", "d", "e", "f", "g", "h", "a", "i", "j", "k", "b", "l", "m", "x" * 32, "x" * 32]
    assert kept(ids) == (["b", "a", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "x" * 32], 5, 0)


@pytest.mark.parametrize("fingerprint", [collide_all, collide_some])
def test_colliding_fingerprints_never_cost_a_recipient_nor_send_one_twice(
    tiny: None, monkeypatch: pytest.MonkeyPatch, fingerprint: object
) -> None:
    monkeypatch.setattr(dedup, "fingerprint", fingerprint)
    ids = ["peter", "amara", "peter", "jun", "sofia", "amara", "leckie", "jun", "x" * 31 + "a", "x" * 31 + "b"]
    assert kept(ids, excluded=["sofia", "nobody", "x" * 31 + "b"]) == (
        ["peter", "amara", "jun", "leckie", "x" * 31 + "a"],
        3,
        2,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_exports_match_the_oracle_in_memory_spilled_and_colliding(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    pool = ["".join(rng.choice("ab\u00e9\u674e1") for _ in range(rng.randint(1, 10))) for _ in range(300)]
    ids = [rng.choice(pool) for _ in range(2000)]
    excluded = rng.sample(pool, 40)
    expected = first_occurrences(ids, set(excluded))
    assert kept(ids, excluded)[0] == expected  # one flush, in memory
    monkeypatch.setattr(dedup, "_FLUSH_ROWS", 50)
    monkeypatch.setattr(dedup, "_KEPT_BYTES", 1000)
    monkeypatch.setattr(dedup, "_GROUP_ROWS", 100)
    assert kept(ids, excluded)[0] == expected  # many flushes, most in the temporary file
    monkeypatch.setattr(dedup, "fingerprint", collide_some)
    assert kept(ids, excluded)[0] == expected


@pytest.mark.parametrize("fingerprint", [dedup.fingerprint, collide_all])
def test_short_ids_meet_their_repeats_among_long_ones_in_other_flushes_and_the_suppression_list(
    tiny: None, monkeypatch: pytest.MonkeyPatch, fingerprint: object
) -> None:
    # A flush keeps only as many words as its longest ID needs: "a" alone is one word, "x" * 32 four.
    monkeypatch.setattr(dedup, "fingerprint", fingerprint)
    ids = ["a", "b", "c", "d", "e", "f", "g", "h", "x" * 32, "a", "y" * 20, "b", "c" * 9, "i"]
    assert kept(ids, excluded=["c" * 9, "e", "x" * 32]) == (["a", "b", "c", "d", "f", "g", "h", "y" * 20, "i"], 2, 3)


@pytest.mark.parametrize("length", [1, 5, 8, 12, 16, 31, 32])
def test_ids_of_one_length_meet_their_repeats_within_and_across_flushes(tiny: None, length: int) -> None:
    # Every flush of 8 holds IDs of one length, whose records are cleared past it with one mask.
    ids = [char * length for char in "abcabdeafghaib"]
    excluded = ["e" * length, "z" * length]
    assert kept(ids, excluded) == ([char * length for char in "abcdfghi"], 5, 1)


def test_one_id_repeated_in_every_flush_is_one_recipient(tiny: None) -> None:
    assert kept(["same"] * 1000 + ["other"]) == (["same", "other"], 999, 0)


def test_an_export_spanning_flushes_and_the_temporary_file_sends_each_id_once_in_order(
    tiny: None, tmp_path: Path
) -> None:
    (tmp_path / "r.txt").write_text("".join(f"u{i % 30}\n" for i in range(100)))
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "r.txt"}])
    (job,) = read_jobs([str(path)], 7)
    assert isinstance(job, Job)
    assert [uid for batch in split(job) for uid in batch.recipients or ()] == [f"u{i}" for i in range(30)]
    assert (job.recipient_count, job.duplicates, job.batches) == (30, 70, 5)


def test_a_full_disk_while_spilling_is_one_line_and_nothing_of_the_job(
    tiny: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full() -> object:
        return open("/dev/full", "w+b")  # every write fails with ENOSPC, as a full file system's would

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: "/var/tmp")
    (tmp_path / "r.txt").write_text("".join(f"u{i}\n" for i in range(100)))
    path = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "r.txt"}])
    with pytest.raises(ExportError) as caught:
        list(read_jobs([str(path)], 500))
    assert str(caught.value) == (
        f"{path}:1: r.txt: cannot write a temporary file under /var/tmp (TMPDIR): No space left on device"
    )
    assert caught.value.exit_code == 2


def the_rules(data: bytes) -> list[bytes]:
    """The oracle: a text export read as the reader of 3813d17 read it, line by line."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    ids = []
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix(b"\r")
        if len(line) > 32:
            raise ValueError(f"line {number}: long")
        text = line.strip()
        if not text:
            continue
        try:
            uid = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"line {number}: utf-8") from None
        if not uid.isprintable():
            raise ValueError(f"line {number}: unprintable")
        ids.append(text)
    return ids


def read_fast(data: bytes, block: int) -> list[bytes]:
    pieces = iter([data[at : at + block] for at in range(0, len(data), block)])
    try:
        blocks = list(text_format.read_text(lambda _n: next(pieces, b""), "recipients_file", "r.txt"))
    except Reject as rej:
        number = rej.reason.split(" line ")[1].split(":")[0]
        kind = {"UserID must be at most 32 bytes": "long", "not valid UTF-8": "utf-8"}.get(
            rej.reason.split(": ", 1)[1], "unprintable"
        )
        raise ValueError(f"line {number}: {kind}") from None
    return [line for b in blocks for line in b.data.split(b"\n")[:-1]]


@pytest.mark.parametrize("seed", range(8))
def test_the_fast_path_reads_a_text_export_exactly_as_the_rules_do(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(text_format, "_BLOCK", 64)  # many blocks, some of them plain, some not
    rng = random.Random(seed)
    pieces = [b"peter", b"amara", b" jun ", b"\t", b"", b"  ", "jos\u00e9".encode(), "\u3000x".encode(), b"a\x00b"]
    pieces += [b"x" * 32, b" " + b"x" * 32, b"\xff", b"\xef\xbb\xbfz", b"a b", b"sofia\r"]
    for _ in range(30):
        lines = [rng.choice(pieces[:7] if rng.random() < 0.7 else pieces) for _ in range(rng.randint(1, 60))]
        data = rng.choice([b"", b"\xef\xbb\xbf"]) + b"".join(line + rng.choice([b"\n", b"\r\n"]) for line in lines)
        if rng.random() < 0.3:
            data = data.rstrip(b"\n")
        try:
            expected: list[bytes] | str = the_rules(data)
        except ValueError as exc:
            expected = str(exc)
        for block in (7, 64, 1000):
            try:
                got: list[bytes] | str = read_fast(data, block)
            except ValueError as exc:
                got = str(exc)
            assert got == expected, (data, block)


def test_a_text_exports_hash_read_in_many_pieces_is_that_of_its_recipients_listed(
    tiny: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.jobs import exports

    monkeypatch.setattr(exports, "_COPY", 16)  # the spool read back for the hash a few lines at a time
    ids = [f"u{i % 37}" for i in range(300)]
    (tmp_path / "r.txt").write_text("".join(uid + "\n" for uid in ids))
    export = {**BASE, "job_id": "j", "recipients_file": "r.txt"}
    listed = {**BASE, "job_id": "j", "ToMembers_Account": first_occurrences(ids)}
    one, other = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [export, {**listed, "job_id": "k"}]))], 500)
    assert isinstance(one, Job) and isinstance(other, Job)
    assert one.job_hash == other.job_hash  # the hash of the same recipients, as journals were written
    assert (one.recipient_count, one.duplicates) == (37, 263)


def first_word(recs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    return recs[:, 0].copy()  # IDs that share their first 8 bytes collide


@pytest.mark.parametrize("fingerprint", [dedup.fingerprint, first_word])
def test_a_few_repeats_among_many_are_found_and_so_are_colliding_ones(
    monkeypatch: pytest.MonkeyPatch, fingerprint: object
) -> None:
    monkeypatch.setattr(dedup, "fingerprint", fingerprint)
    ids = [f"p{i:05d}" for i in range(2000)] + ["aaaaaaaaX", "aaaaaaaaY", "p00007", "aaaaaaaaX", "aaaaaaaaZ"]
    expected = first_occurrences(ids)
    assert kept(ids) == (expected, 2, 0)
    assert kept(ids, excluded=["aaaaaaaaY", "p01999"]) == (
        [u for u in expected if u not in ("aaaaaaaaY", "p01999")],
        2,
        2,
    )
