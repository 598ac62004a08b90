"""A model of the adaptive pace against the sandbox's rate window (not a test, not the product):
what chose the constants of `dispatcher.pacing.adaptive`, in simulated time, so that a change to them can
be judged before it is measured.

    .venv/bin/python bench/pace_model.py [--runs 150] [--requests 2000]

Requests start at the pace, each a millisecond late at most (the event loop), and reach the server
0-50 ms later, uniform, a delay of their own; the server admits at most `rate` in any sliding
second of arrivals and answers the rest 60007, 250-350 ms after arrival. A 60007 steps the pace
down (`Pace.told_too_frequent`) when its reply comes back. Printed: replies 60007 per run (mean, max,
runs over 2) and the share of the rate achieved, for pacing held fixed and for a few settings of
the adaptive pace.

`--typo` models `--rate 2000` against a server that takes 200, with the product's own pace
(`adaptive.Pace`), 512 workers and their retries (5 attempts, backoff from 0.5 s): the requests
refused, the batches failed and the most arrivals in a second after the first 10 s; beside it, an
oracle that knows the 200 at the first reply and does not ramp: what the burst before any reply costs.

`--perfect` is the bound no sender can beat: requests started exactly on a fixed pace, with no event
loop, no store and no other process between the pace and the socket, reaching a strict window 0-50 ms
late. It prints, for each pace, the share of runs of 2,000 requests in which some second held more
than the rate's arrivals: what a fleet's pace can be on that network before any reply says so.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import heapq
import random
import statistics

from dispatcher.pacing import adaptive

RATE = 200
HEADROOM = 0.005  # the in-process limiter's ceiling: 99.5% of the rate


@dataclasses.dataclass(frozen=True)
class Setting:
    start: float  # share of the rate
    decrease: float
    increase: float  # share of the ceiling a second
    adaptive: bool = True


def simulate(setting: Setting, requests: int, seed: int, jitter: float = 0.05) -> tuple[int, float]:
    """Replies 60007 and the achieved share of the rate of one run."""
    rng = random.Random(seed)
    ceiling = RATE / (1 + HEADROOM)
    level, since, stepped = min(1.0, setting.start * (1 + HEADROOM)), 0.0, float("-inf")

    def share(now: float) -> float:
        return min(1.0, level * (1 + setting.increase * (now - since))) if setting.adaptive else level

    arrivals: list[tuple[float, float]] = []  # (arrival, sent)
    replies: list[tuple[float, float, bool]] = []  # (reply, sent, refused)
    window: collections.deque[float] = collections.deque()
    tat, sent, refused, last_start = 0.0, 0, 0, 0.0
    while sent < requests or arrivals or replies:
        due = tat if sent < requests else float("inf")
        arrive = arrivals[0][0] if arrivals else float("inf")
        reply = replies[0][0] if replies else float("inf")
        if due <= min(arrive, reply):
            start = tat + rng.uniform(0, 0.001)
            last_start = start
            tat += 1 / (ceiling * share(tat))
            sent += 1
            heapq.heappush(arrivals, (start + rng.uniform(0, jitter), start))
        elif arrive <= reply:
            at, start = heapq.heappop(arrivals)
            while window and window[0] <= at - 1.0:
                window.popleft()
            over = len(window) >= RATE
            refused += over
            if not over:
                window.append(at)
            heapq.heappush(replies, (at + rng.uniform(0.25, 0.35), start, over))
        else:
            at, start, over = heapq.heappop(replies)
            if over and setting.adaptive and start >= stepped + adaptive.SETTLE:
                lower = share(at) * setting.decrease
                if lower >= adaptive.FLOOR:
                    level, since, stepped = lower, at, at
    return refused, (requests - 1) / last_start / RATE


class Oracle:
    """A pace that knows, at the first reply "too frequent", that the server takes `cap` a second: no
    ramp, one step there (then the product's steps)."""

    def __init__(self, pace: adaptive.Pace, cap: float, unit: float) -> None:
        self.pace, self.cap, self.unit = pace, cap, unit

    def share(self, now: float) -> float:
        return self.pace.share(now)

    def taking(self, now: float, last: float) -> Oracle:
        self.pace = self.pace.taking(now, last)
        return self

    def took(self, now: float) -> Oracle:
        self.pace = self.pace.took(now)
        return self

    def told_too_frequent(self, now: float, sent: float, unit: float, window: int | None) -> tuple[Oracle, bool]:
        if self.pace.ramps:
            self.pace = adaptive.Pace(adaptive.START * self.cap * self.unit, now, self.pace.top, self.pace.first, now)
            return self, True
        self.pace, stepped = self.pace.told_too_frequent(now, sent, unit, window)
        return self, stepped


def typo(batches: int, seed: int, oracle: bool, rate: float = 2000, cap: int = 200) -> tuple[int, int, int, int]:
    """`--rate rate` against a strict window of `cap`: requests, refused, batches failed, and the most
    arrivals in any second after the first 10 s."""
    rng = random.Random(seed)
    ceiling = rate / (1 + HEADROOM)
    top = adaptive.start_share(HEADROOM)
    first = adaptive.first_share(HEADROOM, rate, cap) if not oracle else top
    pace: adaptive.Pace | Oracle = adaptive.Pace.begin(0.0, first, top)
    if oracle:
        pace = Oracle(adaptive.Pace.begin(0.0, first, top), cap, 1 / ceiling)
    events: list[tuple[float, int, str, tuple[int, float, bool]]] = []
    order = 0

    def push(at: float, kind: str, data: tuple[int, float, bool] = (0, 0.0, False)) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, data))

    queue = collections.deque(range(batches))
    attempts: collections.Counter[int] = collections.Counter()
    waiting = collections.deque(queue.popleft() for _ in range(min(512, batches)))
    window: collections.deque[float] = collections.deque()
    arrivals: list[float] = []
    sent_at: list[float] = []
    tat, requests, refused, failed, pending = float("-inf"), 0, 0, 0, True
    push(0.0, "slot")
    while events:
        at, _, kind, (batch, start, good) = heapq.heappop(events)
        if kind == "slot":
            pending = False
            if not waiting:
                continue
            pace = pace.taking(at, tat).took(at)
            batch = waiting.popleft()
            requests += 1
            attempts[batch] += 1
            sent_at.append(at)
            push(at + rng.uniform(0, 0.001), "arrive", (batch, at, False))
            tat = max(at, tat) + 1 / (ceiling * pace.share(at))
            if waiting:
                pending = True
                push(tat, "slot")
        elif kind == "arrive":
            while window and window[0] <= at - 1.0:
                window.popleft()
            good = len(window) < cap
            if good:
                window.append(at)
            arrivals.append(at)
            push(at + rng.uniform(0.25, 0.35), "reply", (batch, start, good))
        else:
            if kind == "reply" and not good:
                refused += 1
                count = bisect.bisect_left(sent_at, start) - bisect.bisect_left(sent_at, start - 1)
                pace, _ = pace.told_too_frequent(at, start, 1 / ceiling, count)
                if attempts[batch] >= 5:
                    failed += 1
                else:
                    push(at + rng.uniform(0, 0.5 * 2 ** (attempts[batch] - 1)), "retry", (batch, 0.0, False))
                    continue
            if kind == "retry":
                waiting.append(batch)
            elif queue:
                waiting.append(queue.popleft())
            if not pending and waiting:
                pending = True
                push(max(at, tat), "slot")
    late = [a for a in sorted(arrivals) if a >= 10.0]
    most = max((bisect.bisect_right(late, t + 1.0) - i for i, t in enumerate(late)), default=0)
    return requests, refused, failed, most


def perfect(pace: float, requests: int, seed: int, jitter: float = 0.05) -> int:
    """The most arrivals in any sliding second of one run at a perfectly kept `pace` (requests a second)."""
    rng = random.Random(seed)
    arrivals = sorted(k / pace + rng.uniform(0, jitter) for k in range(requests))
    return max(i - bisect.bisect_right(arrivals, at - 1.0) + 1 for i, at in enumerate(arrivals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--typo", action="store_true", help="model --rate 2000 against a server at 200 instead")
    parser.add_argument("--perfect", action="store_true", help="the bound: a perfectly kept fixed pace")
    args = parser.parse_args()
    if args.perfect:
        print(f"a perfectly kept pace, {args.runs} runs of {args.requests} requests, arrivals 0-50 ms late")
        for pace in (0.96, 0.965, 0.97, 0.975, 0.98):
            peaks = [perfect(pace * RATE, args.requests, seed) for seed in range(args.runs)]
            print(
                f"  {pace:.1%} of the rate: runs with a second over {RATE} arrivals "
                f"{100 * sum(m > RATE for m in peaks) / len(peaks):5.1f}%; most in a second: median "
                f"{statistics.median(peaks):.0f}, max {max(peaks)}"
            )
        return
    if args.typo:
        print("--rate 2000 against a strict 200, 4,000 batches, 512 workers, replies 250-350 ms after arrival")
        for label, oracle in (("the adaptive pace", False), ("an oracle, no ramp", True)):
            runs = [typo(4000, seed, oracle) for seed in range(min(args.runs, 20))]
            share = [100 * r[1] / r[0] for r in runs]
            print(
                f"  {label:<20} refused mean {statistics.mean(share):.1f}% max {max(share):.1f}%; batches failed "
                f"{max(r[2] for r in runs)} at most; most arrivals in a second after 10 s: {max(r[3] for r in runs)}"
            )
        return
    chosen = Setting(adaptive.START, adaptive.DECREASE, adaptive.INCREASE)
    settings = [Setting(share, 1.0, 0.0, adaptive=False) for share in (0.995, 0.98, 0.975, 0.97, 0.965)]
    settings += [
        dataclasses.replace(chosen, start=0.995),
        chosen,
        dataclasses.replace(chosen, start=0.98),
        dataclasses.replace(chosen, decrease=0.97),
        dataclasses.replace(chosen, decrease=0.98),
        dataclasses.replace(chosen, increase=adaptive.INCREASE * 2),
    ]
    print(f"{args.runs} runs of {args.requests} requests at --rate {RATE}, arrivals 0-50 ms late")
    for setting in settings:
        results = [simulate(setting, args.requests, seed) for seed in range(args.runs)]
        over = [r[0] for r in results]
        achieved = [r[1] * 100 for r in results]
        name = (
            f"adaptive start {setting.start:.1%} decrease {setting.decrease} increase {setting.increase}"
            if setting.adaptive
            else f"fixed at {setting.start:.1%}"
        )
        print(
            f"  {name:<52} 60007 mean {statistics.mean(over):5.2f} max {max(over):3d} "
            f"runs over 2: {sum(o > 2 for o in over):3d}; achieved min {min(achieved):.1f}% "
            f"mean {statistics.mean(achieved):.1f}%"
        )


if __name__ == "__main__":
    main()
