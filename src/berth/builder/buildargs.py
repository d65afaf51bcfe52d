"""Build arguments (``--build-arg``) as the classic builder tracks them: moby's ``buildargs.go``.

A ``--build-arg`` reaches a step only once the Dockerfile declares it with ``ARG`` in
the current stage (or, for ``FROM``, before the first stage).  The proxy variables
are the exception: they are always allowed, are passed to ``RUN`` without a
declaration, and stay out of the image's history unless the Dockerfile declares them.
The set is the reference dockerd's (20.10): ``ALL_PROXY`` is not one of them there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Allowed without an ARG, and transparent: kept out of the cache key and history.
BUILTIN_ALLOWED_BUILD_ARGS = frozenset(
    {
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
    }
)


class BuildArgs:
    """The build args given with the request and the ones the Dockerfile declared.

    A value of ``None`` is an arg given or declared without a value (``--build-arg X``
    with no ``X`` in the client's environment, ``ARG X``): known, but not set.
    """

    def __init__(self, args_from_options: Mapping[str, str | None] | None = None) -> None:
        self.args_from_options: dict[str, str | None] = dict(args_from_options or {})
        #: args declared in the current stage: expanded in and passed to its steps
        self.allowed_build_args: dict[str, str | None] = {}
        #: args declared before the first FROM: usable in FROM lines
        self.allowed_meta_args: dict[str, str | None] = {}
        #: every arg the Dockerfile declared so far, in any stage
        self.referenced_args: set[str] = set()

    def clone(self) -> BuildArgs:
        """A copy for a new stage (the options are shared, as in moby)."""
        other = BuildArgs()
        other.args_from_options = self.args_from_options
        other.allowed_build_args = dict(self.allowed_build_args)
        other.allowed_meta_args = dict(self.allowed_meta_args)
        other.referenced_args = set(self.referenced_args)
        return other

    def merge_referenced_args(self, other: BuildArgs) -> None:
        self.referenced_args |= other.referenced_args

    def unused_build_args(self) -> list[str]:
        """Args given with the request that no ARG declared (builtins excepted), sorted."""
        return sorted(
            arg
            for arg in self.args_from_options
            if arg not in self.referenced_args and arg not in BUILTIN_ALLOWED_BUILD_ARGS
        )

    def warn_on_unused_build_args(self) -> str:
        """dockerd's line for the build's output, or "" when every arg was used."""
        leftover = self.unused_build_args()
        if not leftover:
            return ""
        return f"[Warning] One or more build-args [{' '.join(leftover)}] were not consumed\n"

    def reset_allowed(self) -> None:
        """A new stage: the previous stage's ARGs no longer apply."""
        self.allowed_build_args = {}

    def add_meta_arg(self, key: str, value: str | None) -> None:
        """An ARG before the first FROM."""
        self.allowed_meta_args[key] = value

    def add_arg(self, key: str, value: str | None) -> None:
        """An ARG in the current stage."""
        self.allowed_build_args[key] = value
        self.referenced_args.add(key)

    def is_referenced_or_not_builtin(self, key: str) -> bool:
        """Whether an arg's value belongs in a RUN step's cache key and history line."""
        return key in self.allowed_build_args or key not in BUILTIN_ALLOWED_BUILD_ARGS

    def get_all_allowed(self) -> dict[str, str]:
        """The stage's args with a value (request's over declared default), and builtins given."""
        return self._all_from(self.allowed_build_args)

    def get_all_meta(self) -> dict[str, str]:
        """As :meth:`get_all_allowed` for the args before the first FROM."""
        return self._all_from(self.allowed_meta_args)

    def filter_allowed(self, env: Iterable[str]) -> list[str]:
        """``KEY=value`` for each allowed arg the config's *env* does not already set."""
        present = {entry.partition("=")[0] for entry in env}
        return [f"{k}={v}" for k, v in self.get_all_allowed().items() if k not in present]

    def _all_from(self, source: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in [*source, *sorted(BUILTIN_ALLOWED_BUILD_ARGS)]:
            value = self._get(key, source)
            if value is not None:
                out[key] = value
        return out

    def _get(self, key: str, source: Mapping[str, str | None]) -> str | None:
        given = self.args_from_options.get(key)
        if given is not None:
            return given
        default = source.get(key)
        if default is None:
            # declared without a value (or a builtin not declared here): a meta ARG's
            # default still applies
            return self.allowed_meta_args.get(key)
        return default
