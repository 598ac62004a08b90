"""Which domain a request goes to: the main one, or, for a while after it could not be reached, the backup.

Each region has a backup domain beside its main one (rules.BACKUP_DOMAINS), the same service under
another name. A request that never left (a connection refused, a name that does not resolve, a TLS
handshake or a connect that timed out) may go anywhere: no server saw it. So a failure to connect
to the main domain sends the next requests to the backup. A request that may have reached a server
(it left, then the connection broke or no reply came) changes nothing here: it is a fault like any
other, retried or not by the engine's rules, and no domain is switched for it.

The rule, upheld by `Failover` alone:
- on the main domain, a failure to connect sends the next requests to the backup (a switch);
- after `back_after` seconds on the backup, one request tries the main domain again (a probe),
  while the others stay on the backup;
- a probe that connects (whatever its reply) brings the run back to the main domain; one that
  cannot keeps the run on the backup for another `back_after`;
- a failure to connect to the backup is an ordinary transport fault: the run stays on the backup,
  and the outage rules (`health`) count it, so that a run whose two domains are down stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from dispatcher.observe.events import DomainSwitched

# Seconds on the backup domain before the main one is tried again. The backup is for an outage or a
# DNS name hijacked by an operator, which last minutes, not seconds. A minute keeps the cost of a main
# domain still down to one failed connect a minute (one attempt of one batch, retried on the backup),
# and a run on the backup comes back at most a minute after the main domain does.
BACK_AFTER = 60.0

Route = Literal["main", "probe", "backup"]  # a probe goes to the main domain, as the test of its return


class Failover:
    """The choice of domain of one client, shared by all its requests. `clock` (monotonic seconds)
    times the stay on the backup; `on_switch` hears each switch, as it happens. Without a backup,
    every request goes to the main domain."""

    def __init__(
        self,
        main: str,
        backup: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        back_after: float = BACK_AFTER,
        on_switch: Callable[[DomainSwitched], None] | None = None,
    ) -> None:
        self.main = main
        self.backup = backup
        self.back_after = back_after
        self._clock = clock
        self._on_switch = on_switch
        self._since: float | None = None  # when the run went to the backup (or its last probe failed); None: on main
        self._probing = False  # a probe is out: the others wait for its outcome on the backup

    @property
    def on_backup(self) -> bool:
        return self._since is not None

    def pick(self) -> Route:
        """Where the next request goes."""
        if self._since is None:
            return "main"
        if not self._probing and self._clock() - self._since >= self.back_after:
            self._probing = True
            return "probe"
        return "backup"

    def connected(self, route: Route) -> None:
        """A request on `route` made its connection (its reply, whatever it is, came from a server)."""
        if route == "probe":
            self._probing = False
            if self._since is not None:
                self._since = None
                self._tell(DomainSwitched("main", self.main, "the main domain is reachable again"))

    def unreachable(self, route: Route, error: str) -> bool:
        """A request on `route` could not connect: nothing was sent. True when the next requests go
        to the other domain, so that this failure says nothing yet of whether the service is up."""
        if route == "backup" or self.backup is None:
            return False
        now = self._clock()
        if route == "probe":
            self._probing = False
            self._since = now  # another stay on the backup before the next probe
            return True
        if self._since is None:
            self._since = now
            self._tell(DomainSwitched("backup", self.backup, error))
        return True  # a request that went to main before the switch: its retry goes to the backup too

    def abandoned(self, route: Route) -> None:
        """A request on `route` ended with no outcome (it was cancelled): a probe is made again later."""
        if route == "probe":
            self._probing = False

    def _tell(self, switch: DomainSwitched) -> None:
        if self._on_switch is not None:
            self._on_switch(switch)


__all__ = ["BACK_AFTER", "Failover", "Route"]
