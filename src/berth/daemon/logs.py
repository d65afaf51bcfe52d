"""Container logs: writing through the json-file driver, reading for ``docker logs``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon.validate import parse_size
from berth.logger import Copier, JSONFileLogger, LogMessage, read_logs

if TYPE_CHECKING:
    from berth.container.container import Container


class ContainerLog:
    """The json-file log of one run: a copier per stream feeding one file."""

    def __init__(self, path: Path, options: dict[str, str]) -> None:
        max_size = options.get("max-size", "-1")
        self.logger = JSONFileLogger(
            path,
            max_size=-1 if max_size in ("", "-1") else parse_size(max_size),
            max_file=int(options.get("max-file", "1") or "1"),
            compress=options.get("compress", "false").lower() in ("1", "true"),
        )
        self._copiers = {
            "stdout": Copier("stdout", self.logger.log),
            "stderr": Copier("stderr", self.logger.log),
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
    return ContainerLog(path, lc.config or {})


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
    )
