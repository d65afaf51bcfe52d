"""The Container: the live, lockable object mutators work on.

Its persisted form is ``config.v2.json`` (:class:`Record`) plus
``hostconfig.json`` in ``<data-root>/containers/<id>/``, written atomically.
:meth:`Container.checkpoint` writes them and publishes an immutable copy to
the ViewDB, so readers (``docker ps``, ``inspect``) never take this lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
from msgspec import field

from berth.container.state import State
from berth.container.stream import LogSink, ProcessIO, Streams
from berth.types.container import Config, HostConfig, MountPoint, NetworkSettings
from berth.utils.atomic import write_file
from berth.utils.timefmt import parse_rfc3339

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


_record_decoder = msgspec.json.Decoder(Record)
_hostconfig_decoder = msgspec.json.Decoder(HostConfig)
_encoder = msgspec.json.Encoder()


class Container:
    """A container as the daemon holds it: record, host config, lock."""

    def __init__(self, root: Path, record: Record, host_config: HostConfig) -> None:
        self.root = root
        self.record = record
        self.host_config = host_config
        self.lock = threading.RLock()
        self.created_ns = parse_rfc3339(record.created)
        # Runtime-only state, never persisted:
        #: attached clients; outlives runs so one can attach before a start
        self.streams = Streams()
        #: stdio of the running process
        self.io: ProcessIO | None = None
        #: where its output is logged while it runs
        self.logger: LogSink | None = None
        #: set whenever no process is running (what stop and kill wait on)
        self.exited = threading.Event()
        if not record.state.running:
            self.exited.set()
        #: the mounted root filesystem and the OCI process of the current run (for exec)
        self.rootfs: Path | None = None
        self.spec_process: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> State:
        return self.record.state

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
    return _record_decoder.decode(raw)


def decode_host_config(raw: bytes) -> HostConfig:
    return _hostconfig_decoder.decode(raw)
