"""Port items of ``docker ps`` carry what moby's swagger requires (the e2e daemon has no
bridge network yet, so its containers list no ports)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from berth.daemon.list import summary_ports
from berth.types.container import PortBinding
from berth.types.wire import to_wire

_FIXTURE = Path(__file__).parent.parent / "e2e" / "data" / "api_required_fields.json"
REQUIRED = {k: v for k, v in json.loads(_FIXTURE.read_text()).items() if not k.startswith("_")}


@pytest.mark.parametrize("version", sorted(REQUIRED))
def test_summary_ports_have_required_fields(version: str) -> None:
    ports = {
        "80/tcp": None,
        "53/udp": [PortBinding(HostIp="0.0.0.0", HostPort="5353")],
        "9000/sctp": [PortBinding()],
    }
    snap: Any = SimpleNamespace(
        record=SimpleNamespace(network_settings=SimpleNamespace(ports=ports))
    )
    items = to_wire(summary_ports(snap))
    assert len(items) == 3
    required = REQUIRED[version]["ContainerSummary"]["Ports[]"]
    for item in items:
        assert [k for k in required if k not in item] == [], item
