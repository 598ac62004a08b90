"""The adaptive pace: a limiter's pace steps down when the server says "too frequent", and creeps
back up while it does not (additive increase, multiplicative decrease, as TCP's congestion window).

Why: a fixed headroom cannot know the network. The server counts arrivals, in a strict one-second
window, and a request that reaches it up to 50 ms late (a real path to Tencent's hosts, a busy
sender) arrives among the ones sent after it: paced at 99.5% of the rate, 8 replies 60007 in 2,000
(measured). Under a uniform jitter of J seconds a one-second window still holds as many arrivals
as the pace on average, but the requests sent within J of either of its edges fall in or out of it
each by chance: the count varies by about sqrt(R x J / 3) (1.8 requests at 200/s and 50 ms; 0.6 at
5 ms), and a pace must stay several of those below the rate. A pace that does so on the worst
network wastes the quiet one; so the pace starts a little below the ceiling, learns from the
server's answers, and goes back up while none say it is too fast.

The pace is a share of the ceiling (the limiter's pace at 1.0: `--rate` less its headroom; never
above it). Its state is three numbers: the share at a moment, that moment, and when it last
stepped down; later shares follow from the time alone (a linear creep up to the ceiling), so no
timer runs, and the same arithmetic runs in Redis's Lua on Redis's clock for a shared budget
(`redis.py`, which takes its constants from here).

The constants were chosen on a model of the sandbox (`bench/pace_model.py`: a strict sliding
one-second window, arrivals 0-50 ms late, uniform, replies 250-350 ms later; 150 runs of 2,000
requests, 15 of 20,000) and checked against the sandbox itself with `bench/run.py --only
jittery-network` (the README's benchmarks give those figures):
- START 97.5% of the rate. Held fixed under 0-50 ms of jitter, a pace costs replies 60007 in
  2,000: 30 at 99.5% of the rate, 8 at 98%, 2.4 at 97.5%, 0.4 at 97%, none at 96.5%. Starting at
  the ceiling, the replies of the 300 ms before the first one is answered, and of the second after
  it whose window still holds the old pace, were 4.2 a run on average, above the 2 the goal
  allows; starting at 97.5%, 1.2 (more than 2 in 1 run of 150, which had 3), and a quiet network
  still gets 97.5-99.5%.
- DECREASE to 97.5% of the pace: the deepest cut that keeps a pace stepped down once from the
  start above the 95% of the rate the goal keeps (95.06%), and below the 96.5% that holds at 50
  ms. 97% left fewer replies over long runs (0.24 in 2,000 against 0.34) but steps to 94.6%; 98%
  did as well in the model (0.32) at 0.2% more throughput, with less margin for the bunching
  the model has not got (below).
- INCREASE 0.05% of the ceiling a second: back from a step in about 50 s (9,500 requests at 200/s),
  so a network that stays jittery costs a step and a reply 60007 or two in that long (0.34 in
  2,000 over runs of 20,000 in the model; 0.6 at 0.1% a second, 1.1 at 0.2%). Against the sandbox
  on a busy machine, where stalls of either process bunch arrivals beyond the 50 ms, the replies
  came in bunches of 1-3 a few ms apart as the pace crossed 98% of the rate: 0.1% a second got
  there 5-9 s into 9 runs of 10 (3 replies in one of them), 0.05% a second later or not at all
  (4 runs of 10, 1 reply each). A quiet network still gets 97.5% at the start and 99.5% after 40 s.
- FLOOR half the ceiling: what codes that are not about our pace (another sender on the app's
  budget, a server answering 60007 for something else) can cost at most; a step that would go
  below it is not taken, and the replies are only retried, as before.
- SETTLE one second: a reply to a request sent within a second of a step is about a window that
  still held the faster pace's arrivals; it says nothing about the new pace, and steps no further.
- IDLE one second: after a second with no slot taken the server's window is empty, and the pace
  starts again from START (or where it is, if lower), as TCP restarts after an idle spell.
"""

from __future__ import annotations

import dataclasses
import math

START = 0.975  # of the rate: where the pace begins (and begins again after IDLE), unless the ceiling is lower
DECREASE = 0.975  # a step down multiplies the pace by this
INCREASE = 0.0005  # of the ceiling a second, while no step comes
FLOOR = 0.5  # of the ceiling: the lowest the pace steps down to
SETTLE = 1.0  # seconds after a step in which a request's "too frequent" steps no further
IDLE = 1.0  # seconds without a slot after which the pace starts again from START


def start_share(headroom: float) -> float:
    """Where a limiter whose ceiling is the rate / (1 + headroom) begins: START of the rate, as a share
    of that ceiling (at most 1: a ceiling below START begins at the ceiling)."""
    return min(1.0, START * (1 + headroom))


@dataclasses.dataclass(frozen=True, slots=True)
class Pace:
    """A pace, as a share of the ceiling: `level` at the moment `since`, creeping up from there.

    Invariant: FLOOR <= share(t) <= 1 for every t >= since, for a pace made by `begin`,
    `restarted` and `stepped_down`."""

    level: float
    since: float
    stepped: float = -math.inf  # when it last stepped down

    @classmethod
    def begin(cls, now: float, start: float) -> Pace:
        return cls(max(FLOOR, min(1.0, start)), now)

    def share(self, now: float) -> float:
        """The share of the ceiling at `now`."""
        return min(1.0, self.level + INCREASE * max(0.0, now - self.since))

    def restarted(self, now: float, start: float) -> Pace:
        """After an idle spell: from `start`, or from where it is if that is lower."""
        return Pace(min(self.share(now), start), now, self.stepped)

    def stepped_down(self, now: float, sent: float) -> Pace | None:
        """The pace after a "too frequent" at `now` to a request sent at `sent`; None when it does not
        step: the request was sent within SETTLE of the last step, or a step would go below the
        floor (every step is a whole one, so the steps a log line tells of are few)."""
        if sent < self.stepped + SETTLE:
            return None
        level = self.share(now) * DECREASE
        if level < FLOOR:
            return None
        return Pace(level, now, now)
