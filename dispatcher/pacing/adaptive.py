"""The adaptive pace: a limiter's pace steps down when the server says "too frequent", and creeps
back up while it does not (additive increase, multiplicative decrease, as TCP's congestion window).

Why: a fixed headroom cannot know the network. The server counts arrivals in a strict one-second
window, and a request that reaches it late arrives among the ones sent after it; a pace safe on the
worst network wastes the quiet one. So the pace starts a little below the ceiling, learns from the
server's answers, and goes back up while none say it is too fast. It follows the server down however
far, quickly (a ramp above the documented rate, a first step to what filled the window, a counted
second after a step), because a --rate typed ten times too high must not cost hundreds of batches.
The figures behind each constant: docs/guide/measurements.md#adaptive-pace.

The pace is a share of the ceiling (the limiter's pace at 1.0: `--rate` less its headroom; never
above it). Its state is a few numbers: the share at a moment, that moment, when it last stepped
down, and the slots and refusals of the second after that step; later shares follow from the time
alone (a creep up to the ceiling), so no timer runs, and the same arithmetic runs in Redis's Lua
and in PostgreSQL on the store's clock for a shared budget (`redis.py`, `postgres_sql.py`, which
take their constants from here).

The constants were chosen on a model of the sandbox (`bench/pace_model.py`) and checked against the
sandbox itself (`bench/run.py --only jittery-network`).
"""

from __future__ import annotations

import dataclasses
import math

# Why 97.5%: a run that starts there gets about one 60007 on a jittery network (four at the ceiling), and a
# quiet network still gets 97.5-99.5%. docs/guide/measurements.md#start
START = 0.975  # of the rate: where the pace begins (and begins again after IDLE), unless the ceiling is lower
# Why lower for a fleet: a shared store's grants reach the socket later, so its windows run fuller.
# docs/guide/measurements.md#fleet-start
FLEET_START = 0.965  # of the rate: where a budget shared by processes begins (its grants keep closer to its pace)
# Why 2: a typo'd --rate meets the server's cap within a second, before a big burst. docs/guide/measurements.md#ramp
RAMP = 2.0  # a pace that has never stepped down grows this much a second up to its start (above DOCUMENTED)
# Why 97.5%: the deepest cut that keeps one step from the start above 95% of the rate.
# docs/guide/measurements.md#decrease
DECREASE = 0.975  # a step down multiplies the pace by this
# Why so slow: a network that stays jittery then costs a step and a 60007 or two every 50 s or so.
# docs/guide/measurements.md#increase
INCREASE = 0.0005  # of the pace a second, while no step comes
# Why so low: a higher floor became the pace of a whole run after a typo. docs/guide/measurements.md#floor
FLOOR = 0.001  # of the ceiling: the lowest the pace steps down to (a --rate a thousand times too high)
# A reply to a request sent within a second of a step is about a window that still held the faster pace's
# arrivals: it says nothing about the new pace.
SETTLE = 1.0  # seconds after a step in which a request's "too frequent" steps no further
# After a second with no slot the server's window is empty, as TCP restarts after an idle spell.
IDLE = 1.0  # seconds without a slot after which the pace starts again from START
# Why 5%: a jittery network refuses 1-3 in a bunch at the cap, which the plain steps keep up with.
# docs/guide/measurements.md#too-many
TOO_MANY = 0.05  # refused share of a second's requests past which the pace steps to what the server took
# Why a quarter: a ramp on a busy machine sends about half of what it allows; a trickle, far less.
# docs/guide/measurements.md#in-use
IN_USE = 0.25  # share of what the pace allowed in the second before a refusal that was sent, to step to it
REFINED = -2  # `Pace.refused` after a step to what filled the window: replies about it may lower it
# Seconds past which any ramp is over (RAMP ** 64 * FLOOR > 1): the ramp's power is not taken further
# out, where it would overflow a float.
RAMPED = 64.0


def start_share(headroom: float, start: float = START) -> float:
    """Where a limiter whose ceiling is the rate / (1 + headroom) begins: `start` of the rate, as a
    share of that ceiling (at most 1: a ceiling below it begins at the ceiling)."""
    return min(1.0, start * (1 + headroom))


def first_share(headroom: float, rate: float, documented: float | None, start: float = START) -> float:
    """Where the pace of a new budget begins: its start, or, for a rate above what Tencent documents
    for the API, the start of the documented rate, from which it ramps up (as a share of the ceiling)."""
    top = start_share(headroom, start)
    if documented is None or rate <= documented:
        return top
    return min(top, start * (1 + headroom) * documented / rate)


@dataclasses.dataclass(frozen=True, slots=True)
class Pace:
    """A pace, as a share of the ceiling: `level` at the moment `since`, growing from there. `top` is
    where it began had --rate been the API's documented rate or less (its start); below it, a pace
    that has never stepped down ramps up.

    `slots`, `refused`: the second after the last step, counted for the next step: the slots taken
    in it and, of the requests sent in it, those the server answered "too frequent" (`refused` -1:
    not counted, the second before that step ran at another pace; REFINED: the step was to what
    filled the window, which replies to requests sent before it may lower). `first`: where the
    pace began, which no such step goes below.

    Invariant: FLOOR <= share(t) <= 1 for every t >= since, for a pace made by `begin`, `taking`,
    `took` and `told_too_frequent`."""

    level: float
    since: float
    top: float
    first: float
    stepped: float = -math.inf  # when it last stepped down
    slots: int = 0
    refused: int = -1

    @classmethod
    def begin(cls, now: float, first: float, top: float) -> Pace:
        top = max(FLOOR, min(1.0, top))
        first = max(FLOOR, min(first, top))
        return cls(first, now, top, first)

    @property
    def counts_window(self) -> bool:
        """Whether a reply "too frequent" may step it to what filled the window: a limiter counts the
        second before each request for it until then (`told_too_frequent`'s `window`)."""
        return self.ramps or self.refused == REFINED

    @property
    def ramps(self) -> bool:
        """Never stepped down: it ramps from `level` while below the line that creeps from `top`."""
        return self.stepped == -math.inf

    def share(self, now: float) -> float:
        """The share of the ceiling at `now`."""
        elapsed = max(0.0, now - self.since)
        if self.ramps:
            return min(1.0, self.top * (1 + INCREASE * elapsed), self.level * math.pow(RAMP, min(elapsed, RAMPED)))
        return min(1.0, self.level * (1 + INCREASE * elapsed))

    def sent(self, begin: float, end: float) -> float:
        """Requests sent from `begin` to `end` (both >= since) at a pace that never stepped down, in
        seconds at the ceiling: at most the integral of `share`, the smaller of its line's and its
        ramp's (as many as were sent while the workers kept up with the pace, more if they did not)."""
        a, b = begin - self.since, end - self.since
        line = self.top * ((b - a) + INCREASE * (b * b - a * a) / 2)
        if b > RAMPED:
            return line
        return min(line, self.level * (math.pow(RAMP, b) - math.pow(RAMP, a)) / math.log(RAMP))

    def taking(self, now: float, last: float) -> Pace:
        """The pace for a slot asked for at `now`, the last slot having been due at `last`: after an
        idle spell it begins again from where it was at that slot, at most from `top` (the server's
        window is empty: what the pace was learnt against is gone, and so is what was counted)."""
        if now - last <= IDLE:
            return self
        return Pace(min(self.share(last), self.top), now, self.top, self.first, self.stepped)

    def took(self, now: float) -> Pace:
        """The pace once a slot is taken at `now`: counted if it is in the second after a step."""
        if self.refused >= 0 and now < self.stepped + SETTLE:
            return dataclasses.replace(self, slots=self.slots + 1)
        return self

    def told_too_frequent(self, now: float, sent: float, unit: float, window: int | None) -> tuple[Pace, bool]:
        """The pace after a "too frequent" at `now` to a request sent at `sent`, and whether it stepped
        down. `unit`: seconds a request takes at the ceiling (1 / its requests a second). `window`:
        the slots taken in the second before `sent`, as the limiter counted them (None: unknown).

        - Never stepped down yet: the server's window was full of what was sent in the second before
          the request (`window`, or what the pace allowed since it began: more, if the workers fell
          behind it); the pace steps to 97.5% of that if that is lower than a step, and never below
          where it began (a stray reply cannot undo the documented rate). Unless less than IN_USE
          of what the pace allowed was sent: then others filled the window, and it is a step.
          Later replies to requests sent before that step lower it further, counted, without a step.
        - Sent within SETTLE of the last step: it does not step, and is counted if it was sent after it.
        - Otherwise it steps to 97.5% of itself, or, if more than TOO_MANY of the requests of the
          second after the last step were refused (and this one was sent in the second after that),
          to 97.5% of what the server took of them. The second after a step of 97.5% is then
          counted, unless the second before this request ran at another pace (a burst after a start).
        Every step is a whole one at least, and none goes below FLOOR: near it, none is taken."""
        share = self.share(now)
        if self.ramps and sent >= self.since:
            allowed = self.sent(max(sent - 1, self.since), sent)
            filled = allowed if window is None else window * unit
            if filled < IN_USE * allowed:  # not what filled the window: others did (or a stray reply)
                filled = math.inf
            target = max(self.first, DECREASE * filled)
            if target < share * DECREASE:
                return Pace(max(FLOOR, target), now, self.top, self.first, now, 0, REFINED), True
        if self.refused == REFINED and sent < self.stepped and window is not None:
            # The first reply about the full window came back first, not from the first request it
            # refused: the server's window is closer to what was sent before an earlier one (the
            # window also counted refused requests, reordered on the way). Lowered without a step.
            level = max(FLOOR, self.first, DECREASE * window * unit)
            if level < self.level:
                return dataclasses.replace(self, level=level), False
            return self, False
        if sent < self.stepped + SETTLE:
            if self.refused >= 0 and sent >= self.stepped:
                return dataclasses.replace(self, refused=self.refused + 1), False
            return self, False
        target = share * DECREASE
        steady = sent - 1 >= self.since  # the second before it ran at this pace
        if self.refused > TOO_MANY * self.slots and sent < self.stepped + 2 * SETTLE:
            took = DECREASE * (self.slots - self.refused) * unit / SETTLE
            if took < target:
                target, steady = took, False  # the server's window still holds the old pace's pattern
        level = max(FLOOR, target)
        if level > share * DECREASE:  # near the floor: less than a whole step is not taken
            return self, False
        return Pace(level, now, self.top, self.first, now, 0, 0 if steady else -1), True
