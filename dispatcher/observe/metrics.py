"""Prometheus metrics of one run, from its events: a textfile for node_exporter, a live /metrics, a Pushgateway.

Scheduled runs are watched on dashboards, not read on stderr. Each run has a registry of its own
(never prometheus_client's global one), fed by the run's events (dispatcher.observe.events), and exported
three ways, any of them or none:

- `--metrics-file`: the node_exporter textfile-collector format, replaced atomically (a temporary
  file in the same directory, then rename) every few seconds and at the end;
- `--metrics-port`: served live on /metrics while the run lasts (127.0.0.1 unless `--metrics-host`);
- `--pushgateway`: pushed once at the end, whatever the end (success, failure, a signal, a
  configuration error), so a failed nightly run is visible too.

Labels are bounded: `api` (the API's name), `code` (ErrorCode, or `transport`; past MAX_CODES
distinct codes the rest count as `other`), batch `status`, job `result`. Never a job id or a user id.

`dispatcher_last_success_timestamp_seconds` is the time of the last run that exited 0. A run that
did not succeed carries the previous value forward (from the textfile it replaces, or from the
Pushgateway's group), so the alert `time() - dispatcher_last_success_timestamp_seconds > 26*3600`
fires when a nightly run has not succeeded for a day, not on the first failure.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    pushadd_to_gateway,
    write_to_textfile,
)
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import uris
from dispatcher.core.status import FAILED, OK
from dispatcher.errors import OutputError, library_words
from dispatcher.observe.events import (
    BatchSkipped,
    DomainSwitched,
    Event,
    JobAccepted,
    JobRejected,
    PaceStepped,
    RateWaited,
    ReplyRecorded,
    StopRequested,
)
from dispatcher.observe.metrics_options import MetricsOptions as MetricsOptions
from dispatcher.threads import in_daemon_thread

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from dispatcher.observe.summary import Summary

log = structlog.get_logger("dispatcher")

LAST_SUCCESS = "dispatcher_last_success_timestamp_seconds"
MAX_CODES = 50  # distinct `code` label values; a server inventing codes must not grow the series without end
OTHER_CODE = "other"
# The API answers in about 350 ms; the low buckets are for the sandbox and near endpoints.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RunMetrics:
    """The registry of one run and the events subscriber that feeds it."""

    def __init__(self, started: float, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dispatcher_requests", "HTTP requests made, by API and ErrorCode", ["api", "code"], registry=r
        )
        self.latency = Histogram(
            "dispatcher_request_duration_seconds",
            "Time from sending a request to its reply",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter("dispatcher_retries", "Requests that were a batch's retry", registry=r)
        self.batches = Counter("dispatcher_batches", "Batches by final status in this run", ["status"], registry=r)
        self.pending = Gauge("dispatcher_batches_pending", "Batches left unfinished (resume to finish)", registry=r)
        self.jobs = Counter("dispatcher_jobs", "Jobs read, by result", ["result"], registry=r)
        self.notified = Counter("dispatcher_recipients_notified", "Named recipients delivered to", registry=r)
        self.duplicates = Counter(
            "dispatcher_recipients_duplicate",
            "Named recipients left out as a repeat of an earlier one in their job",
            registry=r,
        )
        self.excluded = Counter(
            "dispatcher_recipients_excluded", "Named recipients left out as in their job's exclude_file", registry=r
        )
        self.not_notified = Counter(
            "dispatcher_recipients_not_notified",
            "Named recipients of batches that ended failed, left undelivered",
            registry=r,
        )
        self.rate_wait = Counter(
            "dispatcher_rate_limit_wait_seconds", "Time workers spent waiting for a rate-limit slot", registry=r
        )
        self.pace = Gauge(
            "dispatcher_pace_requests_per_second",
            "The pace of the latest rate-limit slot, by API: at most --rate, lower after replies 60007",
            ["api"],
            registry=r,
        )
        self.steps_down = Counter(
            "dispatcher_rate_steps_down",
            'Times a "too frequent" reply (60007, ...) stepped the pace down, by API',
            ["api"],
            registry=r,
        )
        self.journal_lines = Counter("dispatcher_journal_lines", "Outcome lines written to the journal", registry=r)
        self.backup_switches = Counter(
            "dispatcher_backup_switches",
            "Times the requests moved to the backup domain, a connection to the main one not made",
            registry=r,
        )
        self.start = Gauge("dispatcher_run_start_timestamp_seconds", "When the run started (Unix time)", registry=r)
        self.interrupted = Gauge("dispatcher_interrupted", "1 if a signal stopped the run", registry=r)
        self.running = Gauge("dispatcher_running", "1 while the run is in progress, 0 once it ended", registry=r)
        for status in (OK, FAILED, "skipped"):  # present from the start, so rate() and alerts see a 0
            self.batches.labels(status)
        for result in ("accepted", "rejected"):
            self.jobs.labels(result)
        self.start.set(started)
        self.running.set(1)
        self._codes: set[str] = set()
        self._pace_of: dict[str, Gauge] = {}
        self.previous_success: float | None = None  # carried forward by a run that does not succeed
        self._finished = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, ReplyRecorded):
            code = event.code
            if code not in self._codes:
                if len(self._codes) >= MAX_CODES:
                    code = OTHER_CODE
                else:
                    self._codes.add(code)
            self.requests.labels(event.api, code).inc()
            if event.latency_s is not None:
                self.latency.labels(event.api).observe(event.latency_s)
            self.retries.inc(event.retry)
            if event.recorded:
                self.journal_lines.inc()
                self.notified.inc(event.delivered)  # a batchsendmsg retry line delivers to some too
            if event.final:
                self.batches.labels(event.status).inc()
                if event.status == FAILED:
                    self.not_notified.inc(event.undelivered)
        elif isinstance(event, RateWaited):
            self.rate_wait.inc(max(0.0, event.seconds))
            if event.pace is not None:
                pace = self._pace_of.get(event.api)
                if pace is None:  # labels() takes a lock and builds a key: once an API, not once a slot
                    pace = self._pace_of[event.api] = self.pace.labels(event.api)
                pace.set(event.pace)
        elif isinstance(event, PaceStepped):
            self.steps_down.labels(event.api).inc()
            self.pace.labels(event.api).set(event.pace)
        elif isinstance(event, JobAccepted):
            self.jobs.labels("accepted").inc()
            self.duplicates.inc(event.duplicates)
            self.excluded.inc(event.excluded)
        elif isinstance(event, JobRejected):
            self.jobs.labels("rejected").inc()
            if event.recorded:
                self.journal_lines.inc()
        elif isinstance(event, BatchSkipped):
            self.batches.labels("skipped").inc()
        elif isinstance(event, StopRequested):
            self.interrupted.set(1)
        elif isinstance(event, DomainSwitched):
            self.backup_switches.inc(event.to == "backup")

    def finish(self, exit_code: int, summary: Summary | None = None) -> None:
        """The end of the run: its exit code and end time, and the last success (now, or carried)."""
        if self._finished:  # the end gauges are registered once
            return
        self._finished = True
        r = self.registry
        now = self._clock()
        self.running.set(0)
        if summary is not None:
            self.pending.set(summary.pending)
            self.interrupted.set(int(summary.interrupted))
        Gauge("dispatcher_run_end_timestamp_seconds", "When the run ended (Unix time)", registry=r).set(now)
        Gauge("dispatcher_exit_code", "The run's exit status (0, 1, 2, 130)", registry=r).set(exit_code)
        Gauge("dispatcher_stopped_early", "1 if a configuration error or an outage stopped the run", registry=r).set(
            int(summary.stopped is not None if summary is not None else exit_code == 2)
        )
        last = now if exit_code == 0 else self.previous_success
        if last is not None:
            Gauge(LAST_SUCCESS, "When a run last exited 0 (Unix time)", registry=r).set(last)

    def carry(self, value: float | None) -> None:
        """Remember an earlier run's last success; the latest of those given wins."""
        if value is not None and (self.previous_success is None or value > self.previous_success):
            self.previous_success = value


def read_last_success(lines: Iterable[str], job: str | None = None) -> float | None:
    """The last-success timestamp in exposition text (of the given Pushgateway `job`, if given).

    Line by line, keeping none: a Pushgateway's page holds every group it has, and may be large."""
    for line in lines:
        if not line.startswith(LAST_SUCCESS):
            continue
        try:
            for family in text_string_to_metric_families(line):
                for sample in family.samples:
                    if sample.name == LAST_SUCCESS and (job is None or sample.labels.get("job") == job):
                        return float(sample.value)
        except ValueError:  # not a sample after all: nothing to carry from it
            continue
    return None


def shown_url(url: str) -> str:
    """`url` fit for a log line: a password in it is replaced, as every secret is; a bare host:port
    stays bare."""
    if "://" in url:
        return uris.split(url).shown(user="mark", keep=None)
    return uris.split(f"http://{url}").shown(user="mark", keep=None).removeprefix("http://")


@dataclasses.dataclass(frozen=True)
class Gateway:
    """A Pushgateway URL split for use: where to send, and the basic-auth credentials it held.

    The credentials must come out of the URL: urllib takes `user:password@host` for a host name and
    asks the DNS resolver for it, which sends the password to whatever resolver the machine has."""

    url: str  # scheme://host[:port][/path], no credentials, no trailing /
    username: str | None = dataclasses.field(default=None, repr=False)  # alone, it may be a token
    password: str | None = dataclasses.field(default=None, repr=False)

    def handler(self) -> Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]:
        """prometheus_client's push handler: basic auth when the URL had credentials."""
        if self.username is None and self.password is None:
            return default_handler
        user, password = self.username or "", self.password or ""

        def with_auth(
            url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

        return with_auth

    def headers(self) -> dict[str, str]:
        if self.username is None and self.password is None:
            return {}
        token = base64.b64encode(f"{self.username or ''}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def parse_gateway(url: str) -> Gateway:
    """`url` (http://, https://, or a bare host:port meaning http://) split; ValueError saying what is
    wrong (never with the URL, which may hold a password) if it is not one."""
    parts = uris.split(url if "://" in url else f"http://{url}")
    generic = "give an http:// or https:// URL"
    if parts.spilled:
        # A raw / ? or # in a password ended the host part early: the host would be part of it.
        raise ValueError("percent-encode a / ? or # in the user name or password")
    try:
        host, _ = parts.host()
    except ValueError:  # a port that is not a number, or out of range; a broken IPv6 address
        raise ValueError(generic) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(generic)
    plain = dataclasses.replace(parts, at=False, userinfo="", path=parts.path.rstrip("/"), fragment="")
    return Gateway(plain.written(), parts.user, parts.password)


class Exporter:
    """Takes one run's metrics where the options say: textfile, live endpoint, Pushgateway."""

    def __init__(self, options: MetricsOptions, started: float | None = None) -> None:
        self.options = options
        self.metrics = RunMetrics(time.time() if started is None else started)
        self._server: WSGIServer | None = None
        self.url: str | None = None
        self._finished = False
        self._replace_group = True  # PUT, unless a failed run could not read what it would replace
        # The periodic write runs in a thread that a stop abandons; the lock and this flag keep such
        # a write from replacing the final file after it was written.
        self._write_lock = threading.Lock()
        self._final_written = False
        if options.file is not None:
            try:
                with open(options.file, encoding="utf-8", errors="replace") as previous:
                    self.metrics.carry(read_last_success(previous))
            except OSError:  # none yet (or unreadable): nothing to carry forward
                pass

    def serve(self) -> str | None:
        """Start the live /metrics (a thread of prometheus_client's own); its URL, if one was asked for."""
        if self.options.port is None:
            return None
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(self.options.port, self.options.host, self.metrics.registry)
        except OSError as exc:
            with library_words():  # a library caller set MetricsOptions(port=...), not --metrics-port
                raise OutputError(
                    f"--metrics-port {self.options.port}: cannot listen on {self.options.host}: {exc.strerror}",
                    library=f"MetricsOptions(port={self.options.port}): cannot listen on {self.options.host}: "
                    f"{exc.strerror}",
                ) from None
        port = self._server.server_address[1]
        host = self.options.host if ":" not in self.options.host else f"[{self.options.host}]"
        self.url = f"http://{host}:{port}/metrics"
        log.info("metrics served", url=self.url)
        return self.url

    def write_file(self, final: bool = False) -> None:
        """Replace the textfile atomically; OutputError naming the file if it cannot be written."""
        if self.options.file is None:
            return
        with self._write_lock:
            if self._final_written:
                return
            try:
                write_to_textfile(self.options.file, self.metrics.registry)
            except OSError as exc:
                raise OutputError(f"{self.options.file}: cannot write the metrics: {exc.strerror}") from None
            self._final_written = final

    async def write_periodically(self, on_error: Callable[[str], None]) -> None:
        """Write the textfile every few seconds until cancelled; a failed write is reported once."""
        if self.options.file is None:
            return
        while True:
            await asyncio.sleep(self.options.write_every)
            try:
                await in_daemon_thread(self.write_file, name="dispatcher-metrics")
            except OutputError as exc:
                on_error(str(exc))
                return

    def finish(self, exit_code: int, summary: Summary | None = None) -> None:
        """The run is over: stop serving, record the end, write the textfile, push. A push that
        fails is one warning and changes nothing else; a textfile that cannot be written raises.
        Only the first call does anything (an error after the end must not push a second time)."""
        if self._finished:
            return
        self._finished = True
        self.stop_serving()
        # One deadline for the reading and the push: a gateway that accepts and never answers
        # holds the end of the run for push_timeout, not once for each.
        deadline = time.monotonic() + self.options.push_timeout
        if self.options.pushgateway is not None:
            read, last = self._gateway_last_success()
            self.metrics.carry(last)
            # A run that does not succeed and could not read the group's last success must not
            # replace the group (PUT): that would erase the last success, and the alert on it
            # would never fire again. It adds (POST), which replaces only the metrics it has.
            self._replace_group = read or exit_code == 0
        self.metrics.finish(exit_code, summary)
        try:
            self.write_file(final=True)
        finally:
            self.push(deadline)

    def push(self, deadline: float | None = None) -> None:
        if self.options.pushgateway is None:
            return
        left = self.options.push_timeout if deadline is None else deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("timed out")
            gateway = parse_gateway(self.options.pushgateway)
            (push_to_gateway if self._replace_group else pushadd_to_gateway)(
                gateway.url,
                job=self.options.job,
                registry=self.metrics.registry,
                timeout=left,
                handler=gateway.handler(),
            )
        # urllib's errors are OSErrors; a server that does not speak HTTP raises HTTPException. The
        # run's outcome stands either way.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log.warning(
                "could not push the metrics",
                pushgateway=shown_url(self.options.pushgateway),
                error=str(exc) or type(exc).__name__,
            )

    def _gateway_last_success(self) -> tuple[bool, float | None]:
        """Whether the Pushgateway could be read, and the group's last success it holds, to carry
        forward (None if it holds none)."""
        assert self.options.pushgateway is not None
        try:
            gateway = parse_gateway(self.options.pushgateway)
            request = urllib.request.Request(f"{gateway.url}/metrics", headers=gateway.headers())
            with urllib.request.urlopen(request, timeout=self.options.push_timeout) as response:
                lines = (raw.decode("utf-8", errors="replace") for raw in response)
                return True, read_last_success(lines, self.options.job)
        except (OSError, ValueError, http.client.HTTPException):  # the push may fail too, and say so
            return False, None

    def stop_serving(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
