"""The Container: the live, lockable object mutators work on.

Its persisted form is ``config.v2.json`` (:class:`Record`) plus
``hostconfig.json`` in ``<data-root>/containers/<id>/``, written atomically.
The daemon's ``checkpoint`` writes them and publishes an immutable copy to
the ViewDB, so readers (``docker ps``, ``inspect``) never take this lock.

State changes only through the transitions below (moby's ``container/state.go``),
under the lock.  An exit is announced (the ``exited`` event, ``wait`` callers) when
the daemon publishes the new state, never before: whoever hears of it and then
inspects sees it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
from msgspec import field

from berth.container.state import State
from berth.container.stream import LogSink, ProcessIO, Streams
from berth.types.container import Config, HostConfig, MountPoint, NetworkSettings
from berth.utils.atomic import write_file
from berth.utils.timefmt import format_rfc3339_nano, now_ns, parse_rfc3339

CONFIG_FILE = "config.v2.json"
HOSTCONFIG_FILE = "hostconfig.json"


class Record(msgspec.Struct, rename="pascal"):
    """``config.v2.json``: everything about a container but its HostConfig."""

    id: str = field(name="ID")
    created: str
    path: str
    args: list[str]
    config: Config
    image: str
    name: str
    driver: str
    state: State = msgspec.field(default_factory=State)
    os: str = field(default="linux", name="OS")
    network_settings: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    log_path: str = ""
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    restart_count: int = 0
    has_been_started_before: bool = False
    has_been_manually_stopped: bool = False
    mount_points: dict[str, MountPoint] = msgspec.field(default_factory=dict)
    mount_label: str = ""
    process_label: str = ""
    app_armor_profile: str = ""
    managed: bool = False
    #: berth's own: the interface of each endpoint in the sandbox, by network ID (a
    #: restarted berthd disconnects an adopted endpoint by it)
    net_ifaces: dict[str, str] = msgspec.field(default_factory=dict)
    #: berth's own: the MAC address the user asked for, by network ID (moby's
    #: DesiredMacAddress); EndpointSettings.MacAddress shows the one in use
    desired_macs: dict[str, str] = msgspec.field(default_factory=dict)


_record_decoder = msgspec.json.Decoder(Record)
_hostconfig_decoder = msgspec.json.Decoder(HostConfig)
_encoder = msgspec.json.Encoder()
_SCALARS = frozenset((int, bool, float))
_intern = sys.intern
#: held while a container's attach hub or exit event is made (once each, at first use)
_MAKING = threading.Lock()
_T = TypeVar("_T")


def _share_strings(value: _T) -> _T:
    """*value* with each string in it (dict keys too) replaced by the interpreter's one
    copy of it, in place.

    Every container holds two decoded copies of its record (the live one and the ViewDB's
    snapshot), and most of their strings are the same in every container: the masked
    paths, the image and network IDs, the defaults, the labels' keys. Shared, a created
    container costs about half the memory. Strings are immutable, so what readers and
    writers share is never changed under either. Leaves are handled where they are met
    (no call per string): loading 1,000 containers walks 8,000 of these.
    """
    kind = type(value)
    if kind is str:
        return cast(_T, _intern(cast(str, value)))
    if kind is list:
        items = cast(list[Any], value)
        for i, item in enumerate(items):
            if type(item) is str:
                items[i] = _intern(item)
            elif item is not None and type(item) not in _SCALARS:
                items[i] = _share_strings(item)
    elif kind is dict:
        mapping = cast(dict[Any, Any], value)
        if mapping:
            shared = [
                (
                    _intern(k) if type(k) is str else k,
                    _intern(v)
                    if type(v) is str
                    else v
                    if v is None or type(v) in _SCALARS
                    else _share_strings(v),
                )
                for k, v in mapping.items()
            ]
            mapping.clear()
            mapping.update(shared)
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if type(item) is str:
                setattr(value, name, _intern(item))
            elif item is not None and type(item) not in _SCALARS:
                setattr(value, name, _share_strings(item))
    return value


class Container:
    """A container as the daemon holds it: record, host config, lock.

    Slots, and the attach hub and exit event made at first use: of ten thousand created
    containers most are never attached to or waited on, and the two cost 1.7 KB each.
    """

    __slots__ = (
        "__weakref__",
        "_exit_pending",
        "_exited",
        "_streams",
        "created_ns",
        "host_config",
        "io",
        "lock",
        "logger",
        "record",
        "root",
        "rootfs",
        "spec_process",
    )

    def __init__(self, root: Path, record: Record, host_config: HostConfig) -> None:
        self.root = root
        self.record = _share_strings(record)
        self.host_config = _share_strings(host_config)
        self.lock = threading.RLock()
        self.created_ns = parse_rfc3339(record.created)
        # Runtime-only state, never persisted:
        self._streams: Streams | None = None
        #: stdio of the running process
        self.io: ProcessIO | None = None
        #: where its output is logged while it runs
        self.logger: LogSink | None = None
        self._exited: threading.Event | None = None
        #: the mounted root filesystem and the OCI process of the current run (for exec)
        self.rootfs: Path | None = None
        self.spec_process: dict[str, Any] | None = None
        #: an exit to announce once the state that records it is published
        self._exit_pending = False

    @property
    def streams(self) -> Streams:
        """Attached clients; outlives runs so one can attach before a start."""
        hub = self._streams
        if hub is None:
            with _MAKING:
                if self._streams is None:
                    self._streams = Streams()
                hub = self._streams
        return hub

    @property
    def exited(self) -> threading.Event:
        """Set whenever no process is running (what stop and kill wait on)."""
        event = self._exited
        if event is None:
            with _MAKING:
                if self._exited is None:
                    made = threading.Event()
                    if not self.record.state.running:
                        made.set()
                    self._exited = made
                event = self._exited
        return event

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> State:
        return self.record.state

    # -- state transitions ----------------------------------------------------------
    def set_running(self, pid: int) -> None:
        st = self.state
        st.running = True
        st.paused = st.restarting = st.oom_killed = st.dead = False
        st.pid = pid
        st.exit_code = 0
        st.error = ""
        st.started_at = format_rfc3339_nano(now_ns())
        self.exited.clear()
        self._exit_pending = False

    def set_stopped(self, exit_code: int, exited_at_ns: int = 0) -> None:
        st = self.state
        st.running = st.paused = st.restarting = False
        st.pid = 0
        st.exit_code = exit_code
        st.finished_at = format_rfc3339_nano(exited_at_ns or now_ns())
        self._exit_pending = True

    def set_restarting(self, exit_code: int, exited_at_ns: int = 0) -> None:
        """The process exited and the restart policy starts another: dockerd shows the
        container as running and restarting, and ``wait`` hears of the exit."""
        self.set_stopped(exit_code, exited_at_ns)
        self.state.running = self.state.restarting = True

    def cancel_restart(self) -> None:
        """Stopped (or removed) while waiting out a restart back-off: no process, no
        restart to come."""
        st = self.state
        st.running = st.restarting = False
        self._exit_pending = True

    def set_paused(self, paused: bool) -> None:
        self.state.paused = paused

    def set_oom_killed(self) -> None:
        self.state.oom_killed = True

    def set_removal_in_progress(self) -> None:
        self.state.removal_in_progress = True

    def reset_removal_in_progress(self) -> None:
        """A removal that failed (the kill did not take): the container stays."""
        self.state.removal_in_progress = False

    def set_start_failed(self, error: str, exit_code: int = 0) -> None:
        """A start that failed: the error, and *exit_code* (dockerd's 126/127) or 128."""
        st = self.state
        st.error = error
        if exit_code:
            st.exit_code = exit_code
        elif st.exit_code == 0:
            st.exit_code = 128

    def take_exit(self) -> bool:
        """Whether an exit waits to be announced (the daemon asks as it publishes)."""
        pending, self._exit_pending = self._exit_pending, False
        return pending

    def encode(self) -> tuple[bytes, bytes]:
        return _encoder.encode(self.record), _encoder.encode(self.host_config)

    def to_disk(self, *, host_config: bool = True) -> tuple[bytes, bytes | None]:
        """Write the config files atomically; return what was written."""
        raw = _encoder.encode(self.record)
        hc = _encoder.encode(self.host_config) if host_config else None
        if hc is not None:
            write_file(self.root / HOSTCONFIG_FILE, hc)
        write_file(self.root / CONFIG_FILE, raw)
        return raw, hc

    @classmethod
    def from_disk(cls, root: Path) -> Container:
        record = _record_decoder.decode((root / CONFIG_FILE).read_bytes())
        try:
            host_config = _hostconfig_decoder.decode((root / HOSTCONFIG_FILE).read_bytes())
        except FileNotFoundError:
            host_config = HostConfig()
        return cls(root, record, host_config)


def decode_record(raw: bytes) -> Record:
    return _share_strings(_record_decoder.decode(raw))


def decode_host_config(raw: bytes) -> HostConfig:
    return _share_strings(_hostconfig_decoder.decode(raw))
