"""`dispatcher report`: summarise outcome journals from the latest final line of each batch.

Two passes over each file keep memory bounded by the number of batches, not by the recipients:
the first finds each batch's fate, the second collects the recipients of the batches that were
not delivered (failed, or tried but not finished).

Several journals are read as one run, in the order given, as if they were one file: a job set
split over processes or machines (each its own jobs and journal) is reported as a whole, with the
same keys, summed. A job is its job_id and job_hash: a batch of one job in more than one journal
takes its fate from the last one given, while jobs that share a job_id but not the hash (a cron
job's "daily", another day's content) are kept apart, each with its own fates (see Jobs).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import heapq
import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from dispatcher.core.status import FAILED, OK, PENDING, REJECTED, UNKNOWN, code_key
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.journals import reading, unsent_of
from dispatcher.observe.passes import (
    NOT_SENT,
    BatchSeen,
    FirstPass,
    JobInfo,
    Paths,
    Place,
    Sources,
    first_pass,
    journal_records,
    reason_of,
)
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.codes import meaning

if TYPE_CHECKING:
    pass


def _shown(path: str | os.PathLike[str] | JournalURI) -> str:
    """A journal's path as the report names it (a name that is not UTF-8 shown with U+FFFD)."""
    return os.fsencode(str(path)).decode("utf-8", "replace")


def summarise(*paths: str | os.PathLike[str] | JournalURI) -> dict[str, Any]:
    with reading(paths) as sources:
        return summary_of(paths, sources)


def undelivered(out: TextIO, *paths: str | os.PathLike[str] | JournalURI) -> int:
    """Write the named recipients not notified, one CSV row each (`UNDELIVERED_HEADER`), to `out`, in
    the journals' order; return the rows. Memory is bounded by the batches, not the recipients: the
    lines are read twice, and each recipient is written as it is read. A batch to all members names
    nobody: it is in the report, not here."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(UNDELIVERED_HEADER)
    rows = 0
    with reading(paths) as sources:
        first = first_pass(sources)
        for _, miss in _misses(paths, sources, first):
            errors = miss.get("recipient_errors")
            for user in miss["recipients"] or ():
                code = code_key(errors[user]) if isinstance(errors, dict) else miss["error_code"]
                writer.writerow((miss["job_id"], user, code or "", NOT_SENT if code is None else meaning(code)))
                rows += 1
    return rows


def unknown_check(doc: dict[str, Any]) -> str:
    """What to check of a push whose reply never came, before sending it again."""
    task = doc.get("task_id")
    where = f"its TaskId {task}" if isinstance(task, str) and task else "Tencent's console (Push Service, push records)"
    return (
        f"the push may have been delivered: look for the one sent at {doc.get('at', '?')} in {where}; "
        "if it is not there, send --resume --retry-unknown (it may push twice)"
    )


def _misses(paths: Paths, sources: Sources, first: FirstPass) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every batch not delivered, with its job, as the report lists it: those with a line (the second
    pass, in the journals' order), then those planned that no line names (never sent)."""
    jobs, fates = first.jobs, first.fates
    listed = collections.Counter(info.job_id for info in jobs.all if not info.merged)
    wanted: dict[Place, tuple[int, int, str]] = {}
    for (uid, batch), (fate, place) in fates.items():
        if fate != OK:
            wanted[place] = (uid, batch, fate or PENDING)
    if wanted:
        for place, doc in journal_records(sources):
            hit = wanted.get(place)
            if hit is None:
                continue
            uid, batch, fate = hit
            code = reason_of(doc)
            miss = {
                "job_id": jobs.all[uid].job_id,
                "group_id": doc.get("group_id"),
                "batch": batch,
                "status": fate,
                "recipients": doc.get("recipients"),
                "error_code": code,
                "meaning": meaning(code),
            }
            errors = doc.get("recipient_errors")
            if isinstance(errors, dict):
                # A batch a partial reply cut up (batchsendmsg): exactly those not delivered to,
                # whatever the last request sent, and each one's last error code.
                miss["recipients"] = list(errors)
                miss["recipient_errors"] = errors
                del miss["error_code"], miss["meaning"]  # the batch's own code is not why: each one's is
                miss["meanings"] = {c: meaning(c) for c in sorted(set(map(code_key, errors.values())))}
            if jobs.all[uid].api is not None:  # a batchsendmsg batch is one-to-one, not "no group"
                miss["api"] = jobs.all[uid].api
            if fate == UNKNOWN:
                miss["check"] = unknown_check(doc)
            yield uid, _told_apart(miss, jobs.all[uid], listed, paths)
    for source in sources:  # planned batches no line names: never sent
        for left in unsent_of(source):
            found = jobs.find(left.job_id, left.job_hash)
            if found is None or jobs.all[found].rejected is not None or (found, left.batch) in fates:
                continue
            miss = {
                "job_id": left.job_id,
                "group_id": left.group_id,
                "batch": left.batch,
                "status": PENDING,
                "recipients": left.recipients,
                "error_code": None,
                "meaning": NOT_SENT,
            }
            if jobs.all[found].api is not None:
                miss["api"] = jobs.all[found].api
            yield found, _told_apart(miss, jobs.all[found], listed, paths)


def _told_apart(entry: dict[str, Any], info: JobInfo, listed: collections.Counter[str], paths: Paths) -> dict[str, Any]:
    """An entry of a job whose job_id stands for more than one job says which, by hash and journal."""
    if listed[info.job_id] > 1:
        entry["job_hash"] = info.job_hash
        entry["journal"] = _shown(paths[info.journal])
    return entry


def summary_of(paths: Paths, sources: Sources, keep: int | None = None) -> dict[str, Any]:
    """The report of journals opened by `reading`. With `keep`, `not_notified` holds only its first
    `keep` batches, each with at most `keep` recipients (a page shows no more): memory then stays
    bounded by the batches, also when millions of recipients were not notified. The totals count all."""
    first = first_pass(sources)
    jobs, fates, codes = first.jobs, first.fates, first.codes
    listed = collections.Counter(info.job_id for info in jobs.all if not info.merged)

    by_fate: collections.Counter[str] = collections.Counter()
    job_fates: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (uid, _batch), (fate, _place) in fates.items():
        fate = fate or PENDING
        by_fate[fate] += 1
        job_fates[uid][fate] += 1
    # By job (in the order the jobs came), then batch: a run's failures read in the order of its jobs,
    # whatever order they ended in. The totals are counted as the batches stream by.
    run_reasons = _Reasons()
    job_reasons: dict[int, _Reasons] = collections.defaultdict(_Reasons)
    named = 0
    first_misses: list[tuple[int, int, int, dict[str, Any]]] = []  # (-job, -batch, -seen, miss): a max-heap
    for seen, (uid, miss) in enumerate(_misses(paths, sources, first)):
        run_reasons.add(miss)
        job_reasons[uid].add(miss)
        named += _named(miss)
        item = (-uid, -miss["batch"], -seen, miss)
        if keep is None:
            first_misses.append(item)
        elif len(first_misses) < keep:
            heapq.heappush(first_misses, _cut(item, keep))
        elif item[:3] > first_misses[0][:3]:  # comes before the last one kept
            heapq.heapreplace(first_misses, _cut(item, keep))
    not_notified = [miss for *_, miss in sorted(first_misses, key=lambda item: item[:3], reverse=True)]

    tallies = _tallies(sources, first)
    reconciled: list[dict[str, Any]] = []
    job_list = []
    for uid, info in enumerate(jobs.all):
        if info.merged:
            continue
        counts = job_fates.get(uid, collections.Counter())
        unsent = max(0, info.batches - sum(counts.values()))
        by_fate[PENDING] += unsent if info.rejected is None else 0
        if info.rejected is not None:
            fate = REJECTED
        elif counts[FAILED]:
            fate = FAILED
        elif counts[UNKNOWN]:
            fate = UNKNOWN
        elif counts[OK] == info.batches and info.batches:
            fate = OK
        else:
            fate = PENDING
        entry: dict[str, Any] = {
            "job_id": info.job_id,
            "group_id": info.group_id,
            "fate": fate,
            "batches": info.batches,
            "ok": counts[OK],
            "failed": counts[FAILED],
            "pending": counts[PENDING] + unsent,
        }
        if counts[UNKNOWN]:  # a push whose reply never came: see its not_notified entry for what to check
            entry["unknown"] = counts[UNKNOWN]
        if info.api is not None:
            entry["api"] = info.api
        if info.rejected is not None:
            entry["reason"] = info.rejected
        if info.export is not None:
            entry["export"] = info.export
        if info.task_ids:
            entry["task_ids"] = [info.task_ids[batch] for batch in sorted(info.task_ids)]
        job_list.append(_told_apart(entry, info, listed, paths))
        if uid in tallies or info.export is not None:
            # Apart from the job's entry, whose keys scripts compare whole.
            counted = {"job_id": info.job_id, **tallies.get(uid, _Tally()).reconciled(info, sum(counts.values()))}
            reconciled.append(_told_apart(counted, info, listed, paths))
        if uid in job_reasons:
            entry["not_notified_by_reason"] = job_reasons[uid].rows()

    return {
        "batches": by_fate[OK] + by_fate[FAILED] + by_fate[PENDING] + by_fate[UNKNOWN],
        "ok": by_fate[OK],
        "failed": by_fate[FAILED],
        "rejected": sum(1 for j in job_list if j["fate"] == REJECTED),
        "pending": by_fate[PENDING],
        "unknown": by_fate[UNKNOWN],
        # Named recipients left out, as the summary counts them: of each job, as its latest run read it.
        "duplicates": sum(_count(job, "duplicates") for job in job_list),
        "excluded": sum(_count(job, "excluded") for job in job_list),
        "error_codes": dict(sorted(codes.items())),
        "reconciliation": {"run": _run_reconciled(reconciled), "jobs": reconciled},
        "jobs": job_list,
        "recipients_not_notified": named,
        "not_notified_by_reason": run_reasons.rows(),
        "not_notified": not_notified,
    }


@dataclasses.dataclass
class _Tally:
    """A job's recipients, counted by fate from its batches' lines (and a run's plan): what the
    recipients table lists, without reading the recipients themselves."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    all_members_batches: int = 0  # batches to a whole group: nobody named, nobody counted
    unsent_batches: int = 0  # planned batches no line names, listed with their recipients (a run's plan)

    def add(self, fate: str | None, batch: BatchSeen) -> None:
        if batch.size is None:
            self.all_members_batches += 1
            return
        if fate == OK or batch.errors is None:
            # A batch's latest line without recipient_errors: its fate is every recipient's.
            if fate == OK:
                self.delivered += batch.size
            elif fate == FAILED:
                self.failed += batch.size
            else:
                self.pending += batch.size
            return
        # batchsendmsg: its latest line names every recipient not delivered; a retry, those it sends again.
        self.delivered += batch.size - batch.errors
        again = batch.resend if fate is None else 0
        self.pending += again
        self.failed += batch.errors - again

    def reconciled(self, info: JobInfo, lined: int) -> dict[str, Any]:
        """rows read = delivered + failed + pending + excluded + duplicates + invalid, for one job.

        The export's counts (its first line's, or the plan's) give rows read, duplicates and excluded;
        the batches give the rest. Batches no line and no plan names (a file journal's run stopped
        before them) are pending: their recipients are what the export kept and no batch accounts for
        (`pending_unnamed`, which the recipients table cannot list). Where every batch is accounted
        for, nothing is inferred, and `balanced` is a check of the counts against each other."""
        export = info.export or {}
        missing = max(0, info.batches - lined - self.unsent_batches) if info.rejected is None else 0
        named = self.delivered + self.failed + self.pending
        unnamed = 0
        rows: int | None
        if isinstance(export.get("rows"), int):
            rows = export["rows"]
            duplicates, excluded = _count({"export": export}, "duplicates"), _count({"export": export}, "excluded")
            if missing:  # the recipients of batches never sent: whatever the export kept beyond the named
                unnamed = max(0, rows - duplicates - excluded - named)
        else:  # a list in the job: what its batches named (its duplicates were dropped unrecorded)
            rows = None if missing else named
            duplicates = excluded = 0
        doc: dict[str, Any] = {
            "rows_read": rows,
            "delivered": self.delivered,
            "failed": self.failed,
            "pending": self.pending + unnamed,
            "excluded": excluded,
            "duplicates": duplicates,
            "invalid": 0,  # an invalid UserID rejects its job whole: no recipient of a sent job is one
            "pending_unnamed": unnamed,
            "all_members_batches": self.all_members_batches,
        }
        doc["balanced"] = None if rows is None else rows == _accounted(doc)
        return doc


RECONCILED = ("delivered", "failed", "pending", "excluded", "duplicates", "invalid")


def _accounted(doc: dict[str, Any]) -> int:
    return sum(int(doc[key]) for key in RECONCILED)


def _tallies(sources: Sources, first: FirstPass) -> dict[int, _Tally]:
    """Each job's recipients by fate: its batches with a line, then its planned batches no line names."""
    tallies: dict[int, _Tally] = collections.defaultdict(_Tally)
    for key, (fate, _place) in first.fates.items():
        tallies[key[0]].add(fate, first.jobs.batches[key])
    for source in sources:
        for left in unsent_of(source):
            found = first.jobs.find(left.job_id, left.job_hash)
            if found is None or first.jobs.all[found].rejected is not None or (found, left.batch) in first.fates:
                continue
            tally = tallies[found]
            tally.unsent_batches += 1
            if left.recipients is None:
                tally.all_members_batches += 1
            else:
                tally.pending += len(left.recipients)
    return tallies


def _run_reconciled(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's reconciliation: the jobs' summed (rows read unknown if any job's is)."""
    doc: dict[str, Any] = {"rows_read": 0}
    for key in (*RECONCILED, "pending_unnamed", "all_members_batches"):
        doc[key] = sum(int(job[key]) for job in jobs)
    rows = [job["rows_read"] for job in jobs]
    doc["rows_read"] = None if None in rows else sum(rows)
    doc["balanced"] = None if doc["rows_read"] is None else doc["rows_read"] == _accounted(doc)
    return doc


def _named(miss: dict[str, Any]) -> int:
    return 0 if miss["recipients"] is None else len(miss["recipients"])


def _cut(item: tuple[int, int, int, dict[str, Any]], keep: int) -> tuple[int, int, int, dict[str, Any]]:
    """A batch not notified, with at most `keep` of its recipients (and of their errors)."""
    *order, miss = item
    miss = dict(miss)
    recipients, errors = miss["recipients"], miss.get("recipient_errors")
    if recipients is not None and len(recipients) > keep:
        miss["recipients"] = recipients[:keep]
    if isinstance(errors, dict) and len(errors) > keep:
        miss["recipient_errors"] = dict(itertools.islice(errors.items(), keep))
    return order[0], order[1], order[2], miss


class _Reasons:
    """Recipients not notified, by the code they were not notified for, counted batch by batch."""

    def __init__(self) -> None:
        self._totals: dict[str | None, dict[str, Any]] = {}

    def add(self, miss: dict[str, Any]) -> None:
        errors = miss.get("recipient_errors")
        if isinstance(errors, dict):
            for code, count in collections.Counter(map(code_key, errors.values())).items():
                self._add(code, count, False)
        else:
            self._add(miss["error_code"], _named(miss), miss["recipients"] is None)

    def _add(self, code: str | None, recipients: int, whole_group: bool) -> None:
        row = self._totals.setdefault(
            code,
            {
                "error_code": code,
                "meaning": NOT_SENT if code is None else meaning(code),
                "recipients": 0,
                "batches": 0,
                "all_members_batches": 0,
            },
        )
        row["recipients"] += recipients
        row["all_members_batches" if whole_group else "batches"] += 1

    def rows(self) -> list[dict[str, Any]]:
        """The most recipients first. A batch to all members counts apart (`all_members_batches`): how
        many that is, only the group knows."""
        return sorted(
            self._totals.values(),
            key=lambda row: (-row["recipients"], -row["all_members_batches"], str(row["error_code"])),
        )


UNDELIVERED_HEADER = ("job_id", "user_id", "error_code", "meaning")


def _count(job: dict[str, Any], key: str) -> int:
    value = job.get("export", {}).get(key)
    return value if isinstance(value, int) else 0


def _task_text(task_ids: list[str]) -> str:
    """A job's TaskIds as the text report shows them: the first, and how many there are."""
    if len(task_ids) == 1:
        return f"    TaskId {task_ids[0]}"
    return f"    TaskIds {task_ids[0]}, ... ({len(task_ids):,} in all: report --json lists them)"


def _export_text(export: dict[str, Any]) -> str:
    """A job's "export", as the text report shows it."""

    def number(key: str, noun: str = "") -> str:
        value = export.get(key)
        shown = f"{value:,}" if isinstance(value, int) else "?"
        return f"{shown} {noun}{'' if value == 1 else 's'}" if noun else shown

    text = f"    export: {number('files', 'file')}, {number('rows')} rows, {number('distinct')} distinct, "
    text += f"{number('duplicates')} duplicates, {number('excluded')} excluded"
    if "exclude_files" in export:
        text += f" (exclude_file: {number('exclude_files', 'file')}, {number('exclude_rows')} rows)"
    return text


def _reconciled_text(doc: dict[str, Any]) -> str:
    """rows read = delivered + failed + pending + excluded + duplicates + invalid, and whether it holds."""
    terms = " + ".join(f"{doc[key]:,} {key}" for key in RECONCILED)
    rows = doc["rows_read"]
    text = f"{'?' if rows is None else format(rows, ',')} read = {terms}"
    if doc["pending_unnamed"]:
        text += f" ({doc['pending_unnamed']:,} pending in batches never sent, not named in the journal)"
    if doc["all_members_batches"]:
        whole = doc["all_members_batches"]
        text += f"; and {whole:,} batch{'' if whole == 1 else 'es'} to all members"
    if rows is None:
        return text + "; rows read unknown: batches of a list in a job were never sent"
    if doc["balanced"]:
        return text + ": every recipient accounted for"
    return text + f": DOES NOT ADD UP ({rows - _accounted(doc):+,})"


def _where(group_id: str | None, api: str | None) -> str:
    """Where a job sends: its group; one-to-one for an API that names no group; else none (a job
    rejected without one)."""
    if group_id is not None:
        return f"group {group_id}"
    endpoint = REGISTRY.get(api or "")
    return "one-to-one" if endpoint is not None and endpoint.one_to_one else "no group"


def _which(entry: dict[str, Any]) -> str:
    """Which job an entry is, where its job_id stands for more than one."""
    if "journal" not in entry:
        return ""
    return f"  [{entry['journal']}, job_hash {entry['job_hash'] or 'none: never sent'}]"


SHOWN_PER_JOB = 10  # batches not notified listed per job in the text report; --undelivered lists every recipient


def _reason_text(row: dict[str, Any]) -> str:
    """One line of the totals by reason: how many, and why."""
    code = "unsent" if row["error_code"] is None else row["error_code"]
    named = f"{row['recipients']:,} recipient{'' if row['recipients'] == 1 else 's'}"
    batches = f"{row['batches']:,} batch{'' if row['batches'] == 1 else 'es'}"
    text = f"{named} in {batches}" if row["batches"] else named
    if row["all_members_batches"]:
        whole = row["all_members_batches"]
        text = (
            text + " and " if row["batches"] else ""
        ) + f"{whole:,} batch{'' if whole == 1 else 'es'} to all members"
    return f"{code} ({row['meaning']}): {text}"


def _miss_text(miss: dict[str, Any]) -> str:
    where = _where(miss["group_id"], miss.get("api"))
    if "recipient_errors" in miss:
        errors = miss["recipient_errors"]
        shown = ", ".join(f"{user} ({code_key(code)})" for user, code in list(errors.items())[:10])
        who = f"{len(errors)} recipients: {shown}{' ...' if len(errors) > 10 else ''}"
        why = "; ".join(f"{code}: {text}" for code, text in miss["meanings"].items())
    else:
        recipients = miss["recipients"]
        who = (
            "all members"
            if recipients is None
            else f"{len(recipients)} recipients: "
            + ", ".join(recipients[:10])
            + (" ..." if len(recipients) > 10 else "")
        )
        why = NOT_SENT if miss["error_code"] is None else f"{miss['error_code']}: {miss['meaning']}"
    text = f"  {miss['job_id']} batch {miss['batch']} ({miss['status']}) {where}: {who} ({why}){_which(miss)}"
    return text + (f"\n    check: {miss['check']}" if "check" in miss else "")


def render_text(report: dict[str, Any], *paths: str) -> str:
    lines = [
        f"journal {paths[0]}" if len(paths) == 1 else f"journals {', '.join(paths)} (as one run)",
        f"batches {report['batches']}: ok {report['ok']}, failed {report['failed']}, pending {report['pending']}; "
        f"jobs rejected {report['rejected']}",
    ]
    run = report["reconciliation"]["run"]
    if run["rows_read"] != 0:
        lines.append(f"recipients: {_reconciled_text(run)}")
    counted = {
        (job["job_id"], job.get("job_hash"), job.get("journal")): job for job in report["reconciliation"]["jobs"]
    }
    if report["unknown"]:
        lines.append(f"unknown {report['unknown']}: pushes whose reply never came; each is listed with what to check")
    if report["duplicates"] or report["excluded"]:
        lines.append(f"recipients left out: {report['duplicates']:,} duplicates, {report['excluded']:,} excluded")
    if report["error_codes"]:
        lines.append("replies by error code: " + ", ".join(f"{k}: {v}" for k, v in report["error_codes"].items()))
    lines.append("jobs:")
    for job in report["jobs"]:
        where = _where(job["group_id"], job.get("api"))
        text = (
            f"  {job['job_id']}  {job['fate']}  {job.get('api', '')}{' ' if 'api' in job else ''}{where}  "
            f"batches {job['batches']} "
            f"(ok {job['ok']}, failed {job['failed']}, pending {job['pending']})"
        )
        if "reason" in job:
            text += f"  reason: {job['reason']}"
        lines.append(text + _which(job))
        if isinstance(job.get("export"), dict):
            lines.append(_export_text(job["export"]))
        recipients = counted.get((job["job_id"], job.get("job_hash"), job.get("journal")))
        # A job that named nobody (all members of a group) has nothing to reconcile: no line, unless it does
        # not add up.
        if recipients is not None and (recipients["rows_read"] or not recipients["balanced"]):
            lines.append(f"    recipients: {_reconciled_text(recipients)}")
        if job.get("task_ids"):
            lines.append(_task_text(job["task_ids"]))
        for row in job.get("not_notified_by_reason", ()):
            lines.append(f"    not notified: {_reason_text(row)}")
    if report["not_notified"]:
        lines.append(f"not notified: {report['recipients_not_notified']:,} named recipients, by reason:")
        lines.extend(f"  {_reason_text(row)}" for row in report["not_notified_by_reason"])
        lines.append("not notified, by job and batch:")
        shown: collections.Counter[tuple[str, str]] = collections.Counter()
        left: collections.Counter[tuple[str, str]] = collections.Counter()
        for miss in report["not_notified"]:
            job = (miss["job_id"], miss.get("job_hash") or "")
            if shown[job] < SHOWN_PER_JOB:
                shown[job] += 1
                lines.append(_miss_text(miss))
            else:
                left[job] += 1
                if left[job] == 1:
                    lines.append(f"  {miss['job_id']}: ...")
        if left:
            more = sum(left.values())
            lines.append(
                f"{more:,} more batch{'' if more == 1 else 'es'} not listed here; "
                "`--undelivered FILE` writes every recipient not notified, with the reason"
            )
    return "\n".join(lines)
