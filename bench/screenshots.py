"""The guide's pictures of a terminal: the progress display mid-run, and the summary at the end.

    .venv/bin/python -m bench.screenshots [--out docs/guide/img]

Not a benchmark: it draws `progress.svg` and `summary.svg` with the display's and the summary's own
code, fed a run told as events on a clock of its own (a resume of a 1,980,000-recipient export at the
default --rate 200). The same code draws the same picture every time, so tests/test_screenshots.py
draws them again and checks that the guide's are current.
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.text import Text

from dispatcher.cli.output import summary_table
from dispatcher.observe.events import BatchSkipped, Event, JobAccepted, RateWaited, ReplyRecorded
from dispatcher.observe.progress import RichProgress
from dispatcher.observe.summary import Summary

OUT = Path(__file__).resolve().parent.parent / "docs" / "guide" / "img"
COMMAND = "$ dispatcher send warehouse.jsonl --resume"
WIDTH = 118
BATCHES, SKIPPED, PACE = 3960, 1200, 195.0  # batches of the job; final before this run; requests a second
RETRIED = {40, 41, 900}  # batches answered 10002 (server error) once, then delivered
FAILED = {1707}  # a batch answered 10004 (invalid parameter): failed for good


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def the_run() -> list[tuple[float, Event]]:
    """The run's events, each at its second: the skips, then a request every 1/PACE s."""
    events: list[tuple[float, Event]] = [(0.0, JobAccepted("warehouse", BATCHES, duplicates=18_240, excluded=2_260))]
    events += [(0.0, BatchSkipped("warehouse", index, failed=False)) for index in range(SKIPPED)]
    at = 4.0  # the run read its export again first: 4 s
    for index in range(SKIPPED, BATCHES):
        for attempt in (1, 2) if index - SKIPPED in RETRIED else (1,):
            code = "10002" if attempt == 1 and index - SKIPPED in RETRIED else "0"
            code = "10004" if index - SKIPPED in FAILED else code
            status = "retry" if code == "10002" else "failed" if code == "10004" else "ok"
            delivered = 500 if status == "ok" else 0
            events.append((at, RateWaited(0.0, "send_group_system_notification", PACE)))
            api, retry = "send_group_system_notification", attempt > 1
            reply = ReplyRecorded(api, "warehouse", index, retry, code, "", "", status, 500, 0.04, delivered=delivered)
            events.append((at + 0.04, reply))
            at += 1 / PACE
    return events


def svg(renderable: RenderableType, title: str) -> str:
    """`renderable` as an SVG terminal, with no web font to fetch (the guide is read offline too)."""
    console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(renderable)
    drawn = console.export_svg(title=title, unique_id="dispatcher")
    return re.sub(r',?\s*url\("https?://[^"]*"\) format\("[^"]*"\)', "", drawn)


def draw() -> dict[str, str]:
    """The pictures, by file name."""
    clock = Clock()
    progress = RichProgress(console=Console(file=io.StringIO()), clock=clock)
    progress.rows_read(1_999_999 + 1)  # the pre-scan: the export's rows and the jobs line
    progress.planned(BATCHES, SKIPPED)
    summary = Summary(out="warehouse.outcomes.jsonl", rate_limit=200, message_quota=12_000)
    events = the_run()
    middle = len(events) // 2
    pictures: dict[str, str] = {}
    for number, (at, event) in enumerate(events):
        clock.now = at
        progress(event)
        summary.on_event(event)
        if number == middle:
            shown = Group(Text(COMMAND, style="bold"), progress.renderable())
            pictures["progress.svg"] = svg(shown, "dispatcher send: the progress display")
    summary.elapsed_s = clock.now + 0.3
    summary.sending_s = events[-1][0] - 4.0
    summary.exit_code = summary.decide_exit_code()
    end = Group(Text(COMMAND, style="bold"), progress.renderable(), summary_table(summary.to_dict()))
    pictures["summary.svg"] = svg(end, "dispatcher send: the summary")
    return pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the directory to write them into")
    args = parser.parse_args()
    for name, text in draw().items():
        (args.out / name).write_text(text)
        print(args.out / name)


if __name__ == "__main__":
    main()
