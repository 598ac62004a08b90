"""A model of the adaptive pace against the sandbox's rate window (not a test, not the product):
what chose the constants of `dispatcher.pacing.adaptive`, in simulated time, so that a change to them can
be judged before it is measured.

    .venv/bin/python bench/pace_model.py [--runs 150] [--requests 2000]

Requests start at the pace, each a millisecond late at most (the event loop), and reach the server
0-50 ms later, uniform, a delay of their own; the server admits at most `rate` in any sliding
second of arrivals and answers the rest 60007, 250-350 ms after arrival. A 60007 steps the pace
down (`Pace.stepped_down`) when its reply comes back. Printed: replies 60007 per run (mean, max,
runs over 2) and the share of the rate achieved, for pacing held fixed and for a few settings of
the adaptive pace.
"""

from __future__ import annotations

import argparse
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
        return min(1.0, level + setting.increase * (now - since)) if setting.adaptive else level

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
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
