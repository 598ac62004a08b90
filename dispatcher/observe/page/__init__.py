"""`dispatcher report --html FILE`: one page with the run drawn on it, that opens with no network.

The page holds aggregates only: requests a second over time (timeline.py), the report's counts, its jobs,
and the first `SHOWN` recipients not notified. Its memory is bounded by the batches, not the recipients,
whatever the size of the journal. The charts are uPlot's (MIT), inlined from the files beside this one
with its licence (vendor/); the tables are plain HTML, readable without the script.
"""

from __future__ import annotations

import datetime
import html
import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson

from dispatcher.core.status import code_key
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.journals import reading, records_of
from dispatcher.observe.page.timeline import Drawn, Timeline
from dispatcher.observe.passes import NOT_SENT
from dispatcher.observe.report import summary_of
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.codes import meaning

SHOWN = 100  # recipients not notified listed on the page; `--undelivered FILE` writes them all


def render_page(paths: Sequence[str | os.PathLike[str] | JournalURI], rate: float, shown: int = SHOWN) -> str:
    """The page of the journals, read as one run (as `summarise` reads them), with `rate` drawn as the limit."""
    with reading(paths) as sources:
        report = summary_of(tuple(paths), sources, keep=shown)
        timeline = Timeline()
        for source in sources:
            timeline.extend(records_of(source))
    names = [os.fsencode(str(path)).decode("utf-8", "replace") for path in paths]
    return page(report, timeline.drawn(), rate, names, shown)


def page(report: dict[str, Any], drawn: Drawn, rate: float, names: Sequence[str], shown: int = SHOWN) -> str:
    """The HTML of a report and its timeline."""
    width = drawn.width
    data = {
        "rate": rate,
        "width": width,
        "times": drawn.times,
        "requests": [round(count / width, 3) for count in drawn.counts["requests"]],
        "retries": drawn.counts["retries"],
        "over_rate": drawn.counts["over_rate"],
        "paused": drawn.counts["paused"],
    }
    # "<" only occurs inside JSON strings, where \u003c means the same: no "</script>" can end the block.
    text = orjson.dumps(data).decode().replace("<", "\\u003c")
    vendor = resources.files(__package__) / "vendor"
    fills = {
        "title": html.escape(f"dispatcher report: {', '.join(names)}"),
        "uplot_css": (vendor / "uPlot.min.css").read_text(encoding="utf-8"),
        # MIT asks for its notice in every copy: the page holds one.
        "uplot_js": f"/*!\n{(vendor / 'uPlot.LICENSE').read_text(encoding='utf-8')}*/\n"
        + (vendor / "uPlot.iife.min.js").read_text(encoding="utf-8"),
        "data": text,
        "body": _body(report, drawn, rate, names, shown),
    }
    template = (resources.files(__package__) / "template.html").read_text(encoding="utf-8")
    # One pass: a value filled in is never searched for another placeholder.
    return re.sub(r"\{\{(\w+)\}\}", lambda hit: fills[hit.group(1)], template)


def _n(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lasted(drawn: Drawn) -> str:
    if drawn.first is None or drawn.last is None:
        return "-"
    total = round(drawn.last - drawn.first)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _tile(value: str, label: str, tone: str = "") -> str:
    label = html.escape(label)
    return f'<div class="tile {tone}" data-key="{label}"><b>{value}</b><span>{label}</span></div>'


def _table(
    heads: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int] = frozenset(), kind: str = ""
) -> str:
    """A table of cells already escaped; the columns in `numeric` aligned right."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bar(count: int, most: int, bad: bool) -> str:
    share = 100 * count / most if most else 0
    return f'<div class="bar{" bad" if bad else ""}" style="width:{share:.1f}%"></div>'


def _body(report: dict[str, Any], drawn: Drawn, rate: float, names: Sequence[str], shown: int) -> str:
    e = html.escape
    totals = drawn.totals
    busiest = "-" if drawn.busiest is None else _n(drawn.busiest)
    parts = [
        f'<h1>dispatcher: the run drawn</h1><p class="sub">{"journal" if len(names) == 1 else "journals (as one run)"} '
        f"{e(', '.join(names))}<br>from {_when(drawn.first)} to {_when(drawn.last)} ({_lasted(drawn)})</p>",
        '<div class="tiles">',
        _tile(_n(totals["requests"]), "requests"),
        _tile(_n(report["batches"]), "batches"),
        _tile(_n(report["ok"]), "batches ok", "good"),
        _tile(_n(report["failed"]), "batches failed", "bad" if report["failed"] else ""),
        _tile(_n(report["pending"]), "batches pending"),
        _tile(_n(report["rejected"]), "jobs rejected", "bad" if report["rejected"] else ""),
        _tile(
            _n(report["recipients_not_notified"]), "recipients not notified", "bad" if report["not_notified"] else ""
        ),
        _tile(_n(totals["retries"]), "retries"),
        _tile(_n(totals["over_rate"]), "too frequent replies"),
        _tile(_n(totals["paused"]), "pauses (70050)"),
        _tile(busiest, "busiest second"),
        _tile(_n(rate), "rate limit drawn, a second"),
        "</div>",
        "<h2>Requests a second</h2>",
        '<div id="rate-chart" class="chart"></div>',
        f'<p class="note">Each request counts at its start: its line\'s time less its latency. '
        f"{'One point a second.' if drawn.width == 1 else f'One point every {drawn.width} s: the mean a second.'} "
        f"The dashed line is the rate limit, {_n(rate)} a second.</p>",
        "<h2>Retries and pauses</h2>",
        '<div id="retry-chart" class="chart"></div>',
        f'<p class="note">{_n(totals["retries"])} retries (attempt 2 or later); {_n(totals["over_rate"])} replies '
        f"too frequent (60007, 60011, 10006, 10023), each stepping the pace down; {_n(totals['paused'])} replies "
        "70050, each pausing every start.</p>",
        "<h2>Outcomes by code</h2>",
        _codes(report),
        "<h2>Jobs</h2>",
        _jobs(report),
        "<h2>Recipients not notified</h2>",
        _misses(report, shown),
    ]
    if not drawn.times:
        parts[parts.index('<div id="rate-chart" class="chart"></div>')] = (
            '<p class="note">No request in the journal.</p>'
        )
    return "\n".join(parts)


def _codes(report: dict[str, Any]) -> str:
    codes: dict[str, int] = report["error_codes"]
    if not codes:
        return '<p class="note">No reply in the journal.</p>'
    most = max(codes.values())
    rows = [
        (html.escape(code), html.escape(meaning(code)), _n(count), _bar(count, most, code != "0"))
        for code, count in sorted(codes.items(), key=lambda item: (-item[1], item[0]))
    ]
    return _table(("code", "meaning", "replies", ""), rows, frozenset({2}), kind="bars")


def _jobs(report: dict[str, Any]) -> str:
    rows = []
    for job in report["jobs"]:
        missed = sum(row["recipients"] for row in job.get("not_notified_by_reason", ()))
        endpoint = REGISTRY.get(job.get("api") or "")
        where = job["group_id"] or ("one-to-one" if endpoint is not None and endpoint.one_to_one else "-")
        rows.append(
            (
                html.escape(job["job_id"]),
                html.escape(job.get("api", "send_group_system_notification")),
                html.escape(str(where)),
                html.escape(job["fate"] + (f": {job['reason']}" if "reason" in job else "")),
                _n(job["batches"]),
                _n(job["ok"]),
                _n(job["failed"]),
                _n(job["pending"]),
                _n(missed),
            )
        )
    if not rows:
        return '<p class="note">No job in the journal.</p>'
    heads = ("job", "api", "group", "fate", "batches", "ok", "failed", "pending", "not notified")
    return _table(heads, rows, frozenset({4, 5, 6, 7, 8}))


def _misses(report: dict[str, Any], shown: int) -> str:
    total = report["recipients_not_notified"]
    if not report["not_notified"]:
        return '<p class="note">Every batch was delivered.</p>'
    reasons = [
        (
            html.escape("unsent" if row["error_code"] is None else row["error_code"]),
            html.escape(row["meaning"]),
            _n(row["recipients"]),
            _n(row["batches"]),
            _n(row["all_members_batches"]),
        )
        for row in report["not_notified_by_reason"]
    ]
    rows: list[tuple[str, ...]] = []
    for miss in report["not_notified"]:
        for user, code in _who(miss):
            if len(rows) == shown:
                break
            why = NOT_SENT if code is None else meaning(code)
            cells = (miss["job_id"], str(miss["batch"]), user, "unsent" if code is None else code, why)
            rows.append(tuple(html.escape(cell) for cell in cells))
    return "\n".join(
        [
            f'<p><b id="not-notified-count">{_n(total)}</b> named recipients not notified, by reason:</p>',
            _table(
                ("code", "meaning", "recipients", "batches", "batches to all members"), reasons, frozenset({2, 3, 4})
            ),
            f'<p class="note">The first {_n(len(rows))} of them, by job and batch '
            f"(<code>dispatcher report --undelivered FILE</code> writes every one):</p>",
            _table(("job", "batch", "recipient", "code", "meaning"), rows, frozenset({1})),
        ]
    )


def _who(miss: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The recipients of a batch not notified, each with the code it was not notified for."""
    errors = miss.get("recipient_errors")
    if isinstance(errors, dict):
        return [(user, code_key(code)) for user, code in errors.items()]
    if miss["recipients"] is None:
        return [(f"all members of {miss['group_id']}", miss["error_code"])]
    return [(user, miss["error_code"]) for user in miss["recipients"]]
