"""`dispatcher report`: summarise outcome journals from the latest final line of each batch.

Two passes over each file keep memory bounded by the number of batches, not by the recipients:
the first finds each batch's fate, the second collects the recipients of the batches that were
not delivered (failed, or tried but not finished).

Several journals are read as one run, in the order given, as if they were one file: a job set
split over processes or machines (each its own jobs and journal) is reported as a whole, with the
same keys, summed. A batch in more than one of them takes its fate from the last one given.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from dispatcher.journal.outcomes import FAILED, OK, PENDING, REJECTED, iter_records
from dispatcher.observe.events import code_key


@dataclasses.dataclass
class _JobInfo:
    group_id: str | None = None
    api: str | None = None  # None: send_group_system_notification (its lines name no api)
    batches: int = 0
    rejected: str | None = None  # the reason, while the latest line about the job is a rejection


def _records(paths: tuple[str | os.PathLike[str], ...]) -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
    """Every line of every journal, each with its place: (which journal, which line)."""
    for index, path in enumerate(paths):
        for lineno, doc in enumerate(iter_records(path)):
            yield (index, lineno), doc


def summarise(*paths: str | os.PathLike[str]) -> dict[str, Any]:
    # (job, batch) -> (final status, the place of a line about it)
    fates: dict[tuple[str, int], tuple[str | None, tuple[int, int]]] = {}
    jobs: dict[str, _JobInfo] = {}
    codes: collections.Counter[str] = collections.Counter()
    for lineno, doc in _records(paths):
        job_id = str(doc["job_id"])
        info = jobs.setdefault(job_id, _JobInfo())
        info.group_id = doc.get("group_id") or info.group_id
        info.api = doc.get("api") or info.api
        if doc.get("status") == REJECTED or doc.get("batch") is None:
            info.rejected = str(doc.get("error_info") or "rejected")
            continue
        info.rejected = None
        info.batches = int(doc.get("batches") or info.batches)
        code = code_key(doc.get("error_code"))
        if code == "0" and doc.get("msg_drop_reason"):
            code = "0-dropped"  # not a delivery: frequency control dropped the message
        codes[code] += 1  # as the summary counts them
        key = (job_id, int(doc["batch"]))
        fate, _ = fates.get(key, (None, lineno))
        fates[key] = (str(doc["status"]) if doc.get("final") else fate, lineno)

    by_fate: collections.Counter[str] = collections.Counter()
    job_fates: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wanted: dict[tuple[int, int], tuple[str, int, str]] = {}
    for (job_id, batch), (fate, lineno) in fates.items():
        fate = fate or PENDING
        by_fate[fate] += 1
        job_fates[job_id][fate] += 1
        if fate != OK:
            wanted[lineno] = (job_id, batch, fate)

    not_notified: list[dict[str, Any]] = []
    if wanted:
        for lineno, doc in _records(paths):
            hit = wanted.get(lineno)
            if hit is not None:
                job_id, batch, fate = hit
                miss = {
                    "job_id": job_id,
                    "group_id": doc.get("group_id"),
                    "batch": batch,
                    "status": fate,
                    "recipients": doc.get("recipients"),
                }
                errors = doc.get("recipient_errors")
                if isinstance(errors, dict):
                    # A batch a partial reply cut up (batchsendmsg): exactly those not delivered to,
                    # whatever the last request sent, and each one's last error code.
                    miss["recipients"] = list(errors)
                    miss["recipient_errors"] = errors
                not_notified.append(miss)

    job_list = []
    for job_id, info in jobs.items():
        counts = job_fates.get(job_id, collections.Counter())
        unsent = max(0, info.batches - sum(counts.values()))
        by_fate[PENDING] += unsent if info.rejected is None else 0
        if info.rejected is not None:
            fate = REJECTED
        elif counts[FAILED]:
            fate = FAILED
        elif counts[OK] == info.batches and info.batches:
            fate = OK
        else:
            fate = PENDING
        entry: dict[str, Any] = {
            "job_id": job_id,
            "group_id": info.group_id,
            "fate": fate,
            "batches": info.batches,
            "ok": counts[OK],
            "failed": counts[FAILED],
            "pending": counts[PENDING] + unsent,
        }
        if info.api is not None:
            entry["api"] = info.api
        if info.rejected is not None:
            entry["reason"] = info.rejected
        job_list.append(entry)

    return {
        "batches": by_fate[OK] + by_fate[FAILED] + by_fate[PENDING],
        "ok": by_fate[OK],
        "failed": by_fate[FAILED],
        "rejected": sum(1 for j in job_list if j["fate"] == REJECTED),
        "pending": by_fate[PENDING],
        "error_codes": dict(sorted(codes.items())),
        "jobs": job_list,
        "not_notified": not_notified,
    }


def _where(group_id: str | None, api: str | None) -> str:
    """Where a job sends: its group; one-to-one for batchsendmsg; else none (a job rejected without one)."""
    if group_id is not None:
        return f"group {group_id}"
    return "one-to-one" if api == "batchsendmsg" else "no group"


def render_text(report: dict[str, Any], *paths: str) -> str:
    lines = [
        f"journal {paths[0]}" if len(paths) == 1 else f"journals {', '.join(paths)} (as one run)",
        f"batches {report['batches']}: ok {report['ok']}, failed {report['failed']}, pending {report['pending']}; "
        f"jobs rejected {report['rejected']}",
    ]
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
        lines.append(text)
    if report["not_notified"]:
        lines.append("not notified:")
        for miss in report["not_notified"]:
            who = (
                "all members"
                if miss["recipients"] is None
                else f"{len(miss['recipients'])} recipients: "
                + ", ".join(miss["recipients"][:10])
                + (" ..." if len(miss["recipients"]) > 10 else "")
            )
            where = _where(miss["group_id"], "batchsendmsg")
            if "recipient_errors" in miss:
                codes = miss["recipient_errors"]
                who = f"{len(codes)} recipients: " + ", ".join(f"{u} ({c})" for u, c in list(codes.items())[:10])
                who += " ..." if len(codes) > 10 else ""
            lines.append(f"  {miss['job_id']} batch {miss['batch']} ({miss['status']}) {where}: {who}")
    return "\n".join(lines)
