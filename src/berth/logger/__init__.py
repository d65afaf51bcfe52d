"""Log drivers: the json-file driver (write, rotate, read with tail/since/follow) and the copier
that cuts container output into messages."""

from berth.logger.copier import MAX_MESSAGE_SIZE, Copier
from berth.logger.jsonfile import JSONFileLogger, LogPosition, LogReader, read_logs
from berth.logger.message import LogMessage

__all__ = [
    "MAX_MESSAGE_SIZE",
    "Copier",
    "JSONFileLogger",
    "LogMessage",
    "LogPosition",
    "LogReader",
    "read_logs",
]
