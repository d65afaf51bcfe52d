"""Log drivers: json-file and local (write, rotate, read with tail/since/follow) over one
file-logger machinery, and the copier that cuts container output into messages."""

from berth.logger._logfile import FileLogger
from berth.logger.copier import MAX_MESSAGE_SIZE, Copier
from berth.logger.jsonfile import JSONFileLogger, LogPosition, LogReader, read_logs
from berth.logger.local import LocalLogger
from berth.logger.message import LogMessage

__all__ = [
    "MAX_MESSAGE_SIZE",
    "Copier",
    "FileLogger",
    "JSONFileLogger",
    "LocalLogger",
    "LogMessage",
    "LogPosition",
    "LogReader",
    "read_logs",
]
