"""Container logs: writing through the json-file or local driver, reading for ``docker logs``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon.validate import json_log_options, local_log_options
from berth.logger import Copier, FileLogger, JSONFileLogger, LocalLogger, LogMessage, read_logs
from berth.logger.attrs import LogInfo, extra_attributes

if TYPE_CHECKING:
    from berth.container.container import Container


#: Where moby's local driver keeps its files, under the container's directory.
LOCAL_LOG_DIR = "local-logs"
LOCAL_LOG_FILE = "container.log"


def log_file(container: Container, json_path: Path) -> Path:
    """The file the container's driver writes: *json_path* for json-file, moby's
    ``local-logs/container.log`` for local."""
    if container.host_config.log_config.type == "local":
        return container.root / LOCAL_LOG_DIR / LOCAL_LOG_FILE
    return json_path


def exposed_log_path(container: Container, json_path: Path) -> str:
    """inspect's ``LogPath``: moby shows json-file's file only; the local driver's format is
    not an API, so its path stays hidden."""
    if container.logger is None or container.host_config.log_config.type != "json-file":
        return ""
    return str(json_path)


def log_info(container: Container) -> LogInfo:
    rec = container.record
    return LogInfo(
        container_id=rec.id,
        container_name=rec.name,
        image_id=rec.image,
        image_name=rec.config.image,
        hostname=rec.config.hostname,
        entrypoint=rec.path,
        args=tuple(rec.args),
        labels=rec.config.labels or {},
        env=tuple(rec.config.env or ()),
    )


def _file_logger(
    driver: str, path: Path, options: dict[str, str], info: LogInfo | None = None
) -> FileLogger:
    if driver == "local":
        max_size, max_file, compress = local_log_options(options)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        return LocalLogger(path, max_size=max_size, max_file=max_file, compress=compress)
    max_size, max_file, compress = json_log_options(options)
    return JSONFileLogger(
        path,
        max_size=max_size,
        max_file=max_file,
        compress=compress,
        attrs=extra_attributes(options, info) if info is not None else None,
    )


class ContainerLog:
    """The log of one run: a copier per stream feeding one file of the json-file or local driver."""

    def __init__(
        self,
        path: Path,
        options: dict[str, str],
        driver: str = "json-file",
        info: LogInfo | None = None,
    ) -> None:
        self.logger = _file_logger(driver, path, options, info)
        # json-file takes a read's whole lines at once, unless rotated by size
        batches = self.logger.max_size == -1
        lines = getattr(self.logger, "log_lines", None) if batches else None
        self._copiers = {
            "stdout": Copier("stdout", self.logger.log, lines=lines),
            "stderr": Copier("stderr", self.logger.log, lines=lines),
        }

    def sink(self, stream: str, data: bytes) -> None:
        self._copiers[stream].feed(data)

    def close(self) -> None:
        for copier in self._copiers.values():
            copier.flush()
        self.logger.close()


def open_log(container: Container, path: Path) -> ContainerLog | None:
    lc = container.host_config.log_config
    if lc.type == "none":
        return None
    if lc.type not in ("json-file", "local"):
        raise errdefs.InvalidParameter(f"logger: no log driver named '{lc.type}' is registered")
    return ContainerLog(log_file(container, path), lc.config or {}, lc.type, log_info(container))


def read(
    container: Container,
    path: Path,
    *,
    since_ns: int,
    until_ns: int,
    tail: int,
    follow: bool,
    stop: threading.Event,
) -> Iterator[LogMessage]:
    lc = container.host_config.log_config
    if lc.type == "none":
        raise errdefs.InvalidParameter("configured logging driver does not support reading")
    live = container.logger if isinstance(container.logger, ContainerLog) else None
    path = log_file(container, path)
    if not path.exists():
        return iter(())
    return read_logs(
        path,
        since_ns=since_ns,
        until_ns=until_ns,
        tail=tail,
        follow=follow and container.state.running,
        logger=live.logger if live is not None else None,
        stop=stop,
        fmt=LocalLogger.FORMAT if lc.type == "local" else JSONFileLogger.FORMAT,
    )
