"""Health checks: a monitor per running container that probes it (moby's ``daemon/health.go``).

The probe is an exec of the container's ``Healthcheck.Test`` (``CMD`` runs its
arguments, ``CMD-SHELL`` runs them through the container's shell, ``NONE``
or no test means no monitor), run through the daemon's exec store so it is
an exec like any other, with the ``exec_create``/``exec_start``/``exec_die``
events moby emits for probes too.  Each result goes into ``State.Health``:
status ``starting`` until the first success, ``healthy`` after a success,
``unhealthy`` after ``Retries`` failures in a row (failures inside the start
period do not count while still ``starting``); the last 5 results with their
output cut at 4096 bytes.  A status change is announced as the event
``health_status: <status>``.

Monitors share one scheduler: a thread that wakes each when its probe is due and
hands the probe to a small pool, so a thousand containers cost no thousand
threads and a probe that hangs until its timeout holds up no other.  A monitor
stops when the container stops; as in moby, stopping it leaves the status
``unhealthy`` (for compatibility with clients that read a stopped container's
health).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING

from berth import errdefs, metrics
from berth.types.container import ExecOptions, Health, HealthcheckResult
from berth.utils.timefmt import format_rfc3339_nano, now_ns, parse_rfc3339
from berth.utils.workers import WorkerPool

if TYPE_CHECKING:
    from berth.container.container import Container
    from berth.container.stream import Streams
    from berth.daemon.daemon import Daemon
    from berth.types.container import HealthConfig

log = logging.getLogger(__name__)

SEC = 1_000_000_000
#: moby's defaults, for a zero value in the config.
DEFAULT_INTERVAL = 30 * SEC
DEFAULT_TIMEOUT = 30 * SEC
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SEC
DEFAULT_RETRIES = 3
#: moby keeps this many results and this many bytes of each probe's output.
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_LEN = 4096
#: How long starting the probe's exec may take; it does not count against Timeout.
START_TIMEOUT_S = 30.0
#: Probes running at once; more due at the same moment wait for a free worker.
PROBE_WORKERS = 16

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

_monitors: weakref.WeakKeyDictionary[Container, _Monitor] = weakref.WeakKeyDictionary()
_monitors_lock = threading.Lock()


def probe_command(container: Container) -> list[str] | None:
    """The probe's argv, or None when the container has no health check to run."""
    cfg = container.record.config
    hc = cfg.healthcheck
    if hc is None or not hc.test:
        return None
    kind, args = hc.test[0], list(hc.test[1:])
    if kind == "CMD":
        return args or None
    if kind == "CMD-SHELL":
        return [*(cfg.shell or ["/bin/sh", "-c"]), *args]
    if kind != "NONE":
        log.warning(
            "Unknown healthcheck type '%s' (expected 'CMD') in container %s", kind, container.id
        )
    return None


def init_monitor(d: Daemon, container: Container) -> None:
    """For a container that just started (or restarted): reset its health to ``starting``
    and start probing.  Called with the container's lock held, after it is running."""
    cmd = probe_command(container)
    if cmd is None:
        return
    stop_monitor(container)
    st = container.state
    if st.health is None:
        st.health = Health(status=STARTING)
    else:
        st.health.status = STARTING
        st.health.failing_streak = 0
    mon = _Monitor(d, container, cmd)
    with _monitors_lock:
        _monitors[container] = mon
    mon.start()


def update_monitor(d: Daemon, container: Container) -> None:
    """After a pause or an unpause (moby's ``updateHealthMonitor``): probe only a running,
    unpaused container.  Pausing stops the monitor (so the status reads ``unhealthy``);
    unpausing starts it again without resetting the status, as moby does."""
    cmd = probe_command(container)
    st = container.state
    if st.health is None or cmd is None:
        return
    if not st.running or st.paused:
        stop_monitor(container)
        return
    with _monitors_lock:
        if container in _monitors:
            return
        mon = _Monitor(d, container, cmd)
        _monitors[container] = mon
    mon.start()


def stop_monitor(container: Container) -> None:
    """Stop probing (the container stopped or is starting over); as moby's
    ``CloseMonitorChannel``, a monitor that was running leaves the status ``unhealthy``."""
    with _monitors_lock:
        mon = _monitors.pop(container, None)
    if mon is None:
        return
    mon.stop.set()
    if container.state.health is not None:
        container.state.health.status = UNHEALTHY


def _or_default(value: int, default: int) -> int:
    return value if value else default


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for non-negative durations: ``1s``, ``1m30s``, ``500ms``."""
    if ns == 0:
        return "0s"
    if ns < SEC:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                whole, frac = divmod(ns, size)
                digits = len(str(size)) - 1
                text = f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") if frac else str(whole)
                return text + unit
    hours, rest = divmod(ns, 3600 * SEC)
    minutes, rest = divmod(rest, 60 * SEC)
    secs, frac = divmod(rest, SEC)
    s = f"{secs}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(secs)
    if hours:
        return f"{hours}h{minutes}m{s}s"
    if minutes:
        return f"{minutes}m{s}s"
    return f"{s}s"


class _Output:
    """The probe's output, as moby's ``limitedBuffer``: the first 4096 bytes, ``...`` if more."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._truncated = False

    def write(self, data: bytes) -> None:
        keep = MAX_OUTPUT_LEN - len(self._buf)
        if keep > 0:
            self._buf += data[:keep]
        if len(data) > max(keep, 0):
            self._truncated = True

    def text(self) -> str:
        out = self._buf.decode("utf-8", "replace")
        return out + "..." if self._truncated else out


async def _collect(streams: Streams, out: _Output, subscribed: threading.Event) -> None:
    sub = streams.subscribe(frozenset({"stdout", "stderr"}))
    subscribed.set()
    try:
        while (item := await sub.get()) is not None:
            out.write(item[1])
    finally:
        streams.unsubscribe(sub)


class _Scheduler:
    """Wakes monitors when their probe is due and runs the probes on a pool."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Monitor]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pool = WorkerPool(PROBE_WORKERS, "berth-health")

    def schedule(self, mon: _Monitor, delay_s: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._seq), mon))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="berth-health-scheduler", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(timeout)
                _, _, mon = heapq.heappop(self._due)
            if not mon.stop.is_set():
                self._pool.submit(mon.run_once)


_scheduler = _Scheduler()


class _Monitor:
    """The probing of one run of one container."""

    def __init__(self, d: Daemon, container: Container, cmd: list[str]) -> None:
        self.d = d
        self.container = container
        self.cmd = cmd
        self.stop = threading.Event()
        hc = container.record.config.healthcheck
        assert hc is not None
        self.hc: HealthConfig = hc
        self.started_ns = parse_rfc3339(container.state.started_at)

    def start(self) -> None:
        _scheduler.schedule(self, self._interval_ns() / SEC)

    def _interval_ns(self) -> int:
        """moby's ``getInterval``: StartInterval while starting inside the start period, and
        never past the end of the start period."""
        interval = _or_default(self.hc.interval, DEFAULT_INTERVAL)
        start_period = _or_default(self.hc.start_period, DEFAULT_START_PERIOD)
        elapsed = now_ns() - self.started_ns
        if elapsed >= start_period:
            return interval
        remaining = start_period - elapsed
        if remaining < interval:
            return remaining
        health = self.container.state.health
        if health is not None and health.status == STARTING:
            return _or_default(self.hc.start_interval, DEFAULT_START_INTERVAL)
        return interval

    def run_once(self) -> None:
        """One probe and its result; the next is scheduled an interval after it ends."""
        started = now_ns()
        try:
            result = self._probe()
        except Exception as e:  # a probe that could not run is a failed probe
            log.warning("Health check for container %s error: %s", self.container.id, e)
            result = HealthcheckResult(exit_code=-1, output=str(e))
        result.start = format_rfc3339_nano(started)
        if not result.end:
            result.end = format_rfc3339_nano(now_ns())
        if self.stop.is_set():
            return
        self._record(result, started)
        if not self.stop.is_set():
            _scheduler.schedule(self, self._interval_ns() / SEC)

    def _probe(self) -> HealthcheckResult:
        d, container = self.d, self.container
        cfg = container.record.config
        loop = d.loop
        if loop is None:
            raise errdefs.Unavailable("the daemon is not serving")
        opts = ExecOptions(
            cmd=self.cmd,
            attach_stdout=True,
            attach_stderr=True,
            user=cfg.user or "",
            working_dir=cfg.working_dir or "",
        )
        exec_id = d.execs.create(container.id, opts)
        try:
            ex = d.execs.get(exec_id)
            out = _Output()
            subscribed = threading.Event()
            collector = asyncio.run_coroutine_threadsafe(
                _collect(ex.streams, out, subscribed), loop
            )
            if not subscribed.wait(START_TIMEOUT_S):
                collector.cancel()
                raise errdefs.System(
                    f"timed out starting health check for container {container.id}"
                )
            try:
                d.execs.start(exec_id, loop)
            except BaseException:
                loop.call_soon_threadsafe(ex.streams.end)
                raise
            timeout = _or_default(self.hc.timeout, DEFAULT_TIMEOUT)
            if not ex.done.wait(timeout / SEC) and not self.stop.is_set():
                self._kill(exec_id)
                try:
                    collector.result(2.0)
                except Exception:
                    collector.cancel()
                text = out.text()
                msg = f"Health check exceeded timeout ({go_duration(timeout)})"
                return HealthcheckResult(
                    end=format_rfc3339_nano(now_ns()),
                    exit_code=-1,
                    output=f"{msg}: {text}" if text else msg,
                )
            try:
                collector.result(2.0)  # the output ends with the process
            except Exception:
                collector.cancel()
            if ex.exit_code is None:
                raise errdefs.System(f"healthcheck for container {container.id} has no exit code")
            return HealthcheckResult(
                end=format_rfc3339_nano(now_ns()), exit_code=ex.exit_code, output=out.text()
            )
        finally:
            d.execs.discard(exec_id)

    def _kill(self, exec_id: str) -> None:
        """A probe past its timeout is killed, and waited for so that probes do not pile up."""
        ex = self.d.execs.get(exec_id)
        try:
            self.d.runtime.kill(self.container.id, signal.SIGKILL, exec_id=exec_id)
        except errdefs.BerthError as e:
            log.debug("killing health check %s: %s", exec_id[:12], e)
        deadline = time.monotonic() + 10
        while not ex.done.wait(0.1) and time.monotonic() < deadline and not self.stop.is_set():
            pass

    def _record(self, result: HealthcheckResult, started_ns: int) -> None:
        """moby's ``handleProbeResult``."""
        metrics.health_checks.inc()
        if result.exit_code != 0:
            metrics.health_checks_failed.inc()
        container = self.container
        with container.lock:
            if self.stop.is_set():
                return  # stopped while the probe ran: the result is stale
            health = container.state.health
            if health is None:
                return
            old = health.status
            entries = list(health.log or [])
            entries.append(result)
            health.log = entries[-MAX_LOG_ENTRIES:]
            if result.exit_code == 0:
                health.failing_streak = 0
                health.status = HEALTHY
            else:
                count = True
                if health.status == STARTING:
                    start_period = _or_default(self.hc.start_period, DEFAULT_START_PERIOD)
                    count = started_ns - self.started_ns >= start_period
                if count:
                    health.failing_streak += 1
                    if health.failing_streak >= _or_default(self.hc.retries, DEFAULT_RETRIES):
                        health.status = UNHEALTHY
            # As moby: published to readers, not written to disk on every probe; the next
            # checkpoint (at the latest the one at exit) persists it.
            self.d.checkpoint(container, host_config=False, write=False)
            if health.status != old:
                self.d.emit_container(container, f"health_status: {health.status}")
