"""berth: a Docker Engine written in Python."""

__version__ = "0.1.0"

#: The Docker Engine release whose API berth speaks.
ENGINE_COMPAT_VERSION = "28.5.2"
#: Highest and lowest Engine API versions served.
API_VERSION = "1.51"
MIN_API_VERSION = "1.24"
