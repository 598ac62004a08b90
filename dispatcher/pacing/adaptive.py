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
above it). Its state is a few numbers: the share at a moment, that moment, when it last stepped
down, and the slots and refusals of the second after that step; later shares follow from the time
alone (a creep up to the ceiling), so no timer runs, and the same arithmetic runs in Redis's Lua
and in PostgreSQL on the store's clock for a shared budget (`redis.py`, `postgres_sql.py`, which
take their constants from here).

A step of 2.5% is for a pace a little too fast. A --rate typed ten times too high (2,000 for 200)
got 7,182 replies 60007 in 10,663 requests and 479 failed batches (measured): the pace stepped 2.5%
a second at most, and stopped at half of --rate. So the pace follows the server down however far
(FLOOR is a typo of three zeros), and three things make that quick:
- Above the API's documented rate (`Endpoint.documented_rate`) the pace begins at START of that
  rate and ramps up, RAMP times a second, to START of --rate (TCP's slow start): an app that bought
  more gets it within seconds; a typo fills the server's window at a few hundred a second, not two
  thousand, so the burst before the first reply comes back is small.
- While the pace has never stepped down, the server's window at a refused request was full of
  what was sent in the second before it: counted (memory.py; shared.py from each grant's number in
  the budget), or what the pace allowed (more, if the workers fell behind it). The pace steps to
  DECREASE of that at once, never below where the ramp began. Unless less than IN_USE of what the
  pace allowed was sent: others filled the window, and it is a plain step.
- After a step of 2.5%, the second it settles in is counted: its slots and the refusals of its
  requests. If more than TOO_MANY of them were refused (another sender on the app's budget, a
  lower cap), the next step goes to DECREASE of what the server took in that second. Not after a
  bigger step, nor after a burst: the server's window still holds the old pace's pattern then.

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
- FLEET_START 96.5% of the rate, for a budget processes share (Redis, PostgreSQL). Three `send` on
  one budget at 97.5% had a reply 60007 and 201 arrivals in some second in nearly every run (0-50
  ms of arrival jitter); one process alone, none. Traced (each request's grant, write and arrival):
  a fleet keeps to its pace, as its processes race for each slot and one woken late is covered by
  another, where one process loses about 1% of its slots to late wake-ups (193-194 writes in any
  second at a pace of 195); and a grant reaches its write through the store's round trip and a
  wake-up (0.4 ms median, 5-9 ms at p99), on top of the 3 ms a grant may come early: 196-197
  writes in some second, so its windows ran 2-3 requests fuller. Not bursts: no second ever held
  more grants than the pace. At 97%, 201 arrivals in 2 runs of 6; at 96.5%, in 1 of 18.
- DECREASE to 97.5% of the pace: the deepest cut that keeps a pace stepped down once from the
  start above the 95% of the rate the goal keeps (95.06%), and below the 96.5% that holds at 50
  ms. 97% left fewer replies over long runs (0.24 in 2,000 against 0.34) but steps to 94.6%; 98%
  did as well in the model (0.32) at 0.2% more throughput, with less margin for the bunching
  the model has not got (below).
- INCREASE 0.05% of the pace a second (of the ceiling before: the same near it, and a pace that
  followed a typo down to a tenth of it creeps as slowly): back from a step in about 50 s (9,500 requests at 200/s),
  so a network that stays jittery costs a step and a reply 60007 or two in that long (0.34 in
  2,000 over runs of 20,000 in the model; 0.6 at 0.1% a second, 1.1 at 0.2%). Against the sandbox
  on a busy machine, where stalls of either process bunch arrivals beyond the 50 ms, the replies
  came in bunches of 1-3 a few ms apart as the pace crossed 98% of the rate: 0.1% a second got
  there 5-9 s into 9 runs of 10 (3 replies in one of them), 0.05% a second later or not at all
  (4 runs of 10, 1 reply each). A quiet network still gets 97.5% at the start and 99.5% after 40 s.
- FLOOR 0.1% of the ceiling: what keeps a pace above zero. It was half the ceiling, as what codes
  not about our pace could cost at most; a typo made that the pace for the whole run. A step that
  would go below it is not taken.
- RAMP 2: from 195 to 1,950 a second in 3.3 s. In the model of `--rate 2000` against a strict 200
  (4,000 batches, latency 250-350 ms, concurrency 512) the first refusal comes at 0.78 s, at 340 a
  second, and 2.5% of the requests are refused; an oracle that knew 200 at the first reply, with
  no ramp, left 12%: the burst of the first 300 ms is what costs.
- TOO_MANY 5% of a counted second: a jittery network refuses 1-3 in a bunch at the cap (1.5% of
  195), and below 5% the 2.5% steps keep up.
- IN_USE a quarter: a ramp whose workers fell behind it (a busy machine) sent about half of what it
  allowed in the second before its first refusal (200 of 385, measured); a trickle of one request
  a second, told "too frequent", sent 0.05% of it.
- SETTLE one second: a reply to a request sent within a second of a step is about a window that
  still held the faster pace's arrivals; it says nothing about the new pace, and steps no further.
- IDLE one second: after a second with no slot taken the server's window is empty, and the pace
  starts again from START (or where it was at its last slot, if lower), as TCP restarts after an
  idle spell.
"""

from __future__ import annotations

import dataclasses
import math

START = 0.975  # of the rate: where the pace begins (and begins again after IDLE), unless the ceiling is lower
FLEET_START = 0.965  # of the rate: where a budget shared by processes begins (its grants keep closer to its pace)
RAMP = 2.0  # a pace that has never stepped down grows this much a second up to its start (above DOCUMENTED)
DECREASE = 0.975  # a step down multiplies the pace by this
INCREASE = 0.0005  # of the pace a second, while no step comes
FLOOR = 0.001  # of the ceiling: the lowest the pace steps down to (a --rate a thousand times too high)
SETTLE = 1.0  # seconds after a step in which a request's "too frequent" steps no further
IDLE = 1.0  # seconds without a slot after which the pace starts again from START
TOO_MANY = 0.05  # refused share of a second's requests past which the pace steps to what the server took
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
