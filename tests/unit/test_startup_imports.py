"""What berthd loads to start: the registry client, pull, push and the builder wait for
their first use (with http.client and email they are 2 MB of its idle RSS)."""

from __future__ import annotations

import subprocess
import sys

# what berth.cli's daemon start imports
_START = (
    "import sys, berth.cli\n"
    "from berth.api.server import ApiServer\n"
    "from berth.daemon.daemon import Daemon\n"
    "from berth.network.service import NetworkService\n"
    "print(' '.join(sorted(sys.modules)))\n"
)
_LATER = (
    "http.client",
    "email.parser",
    "urllib.request",
    "berth.distribution.registry",
    "berth.distribution.service",
    "berth.distribution.pull",
    "berth.distribution.push",
    "berth.builder.build",
    "berth.builder.context",
)


def test_the_daemon_starts_without_the_registry_stack_and_the_builder() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _START], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(out.split())
    assert "berth.daemon.daemon" in loaded
    assert sorted(loaded.intersection(_LATER)) == []
