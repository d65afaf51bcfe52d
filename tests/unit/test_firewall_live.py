"""The firewall against the real kernel, never the host's ruleset: every scenario runs in a
child process inside a network namespace of its own (``unshare --net``), which vanishes with
its processes, rules, bridges and veths."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import pytest


def _libnftables() -> bool:
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not _libnftables(),
    reason="needs root, unshare and libnftables",
)

PRELUDE = """\
import subprocess, sys
from berth.network.firewall import Firewall, NetworkRules, PortRule

def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, (cmd, p.stdout, p.stderr)
    assert "incompatible" not in p.stderr and "Warning" not in p.stderr, (cmd, p.stderr)
    return p.stdout

fw = Firewall()
NET = NetworkRules("br-live", "10.210.0.0/24", "fd00:210::/64")
PORTS = [
    PortRule("tcp", "", 8080, "10.210.0.2", 80),
    PortRule("udp", "127.0.0.1", 5353, "10.210.0.2", 53),
    PortRule("tcp", "::", 8080, "fd00:210::2", 80),
]
"""


def _in_netns(script: str, *, timeout: float = 30) -> str:
    code = PRELUDE + textwrap.dedent(script)
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_setup_ports_idempotent_and_teardown() -> None:
    _in_netns(
        """
        fw.setup([NET], PORTS)
        v4 = sh("nft", "list", "table", "ip", "berth")
        assert "tcp . 8080 : 10.210.0.2 . 80" in v4, v4
        assert "127.0.0.1 . udp . 5353 : 10.210.0.2 . 53" in v4, v4
        assert '"br-live" : jump out-br-live' in v4 and "10.210.0.0/24" in v4, v4
        assert "fd00" not in v4
        v6 = sh("nft", "list", "table", "ip6", "berth")
        assert "tcp . 8080 : fd00:210::2 . 80" in v6 and "fd00:210::/64" in v6, v6
        assert "10.210" not in v6

        more = [PortRule("tcp", "", 9000 + i, "10.210.0.3", 80) for i in range(3)]
        fw.add_ports(more)
        fw.add_ports(more)
        assert sh("nft", "list", "map", "ip", "berth", "pub_any").count("10.210.0.3") == 3
        fw.remove_ports(more)
        fw.remove_ports(more)
        after = sh("nft", "list", "table", "ip", "berth")
        assert "10.210.0.3" not in after and "tcp . 8080 : 10.210.0.2 . 80" in after, after

        # a stale key is replaced by add, and left alone by another container's remove
        fw.add_ports([PortRule("tcp", "", 8080, "10.210.0.9", 80)])
        fw.remove_ports([PortRule("tcp", "", 8080, "10.210.0.2", 80)])
        assert "tcp . 8080 : 10.210.0.9 . 80" in sh("nft", "list", "map", "ip", "berth", "pub_any")

        # setup again replaces everything: the gone network and ports disappear
        fw.setup([NetworkRules("br-two", "10.211.0.0/24", internal=True)], [])
        again = sh("nft", "list", "table", "ip", "berth")
        assert "br-live" not in again and "10.210" not in again and "br-two" in again, again

        fw.remove_network(NetworkRules("br-two", "10.211.0.0/24", internal=True))
        fw.remove_network(NetworkRules("br-two", "10.211.0.0/24"))
        fw.add_network(NET)
        fw.remove_network(NET)
        gone = sh("nft", "list", "table", "ip", "berth")
        assert "br-" not in gone and "10.21" not in gone, gone

        fw.teardown()
        fw.teardown()
        fw.remove_network(NET)  # nothing there: still no error
        fw.remove_ports(PORTS)
        assert sh("nft", "list", "ruleset").strip() == ""
        """
    )


def test_forward_accept_beside_iptables() -> None:
    _in_netns(
        """
        fw.ensure_forward_accept(["br-live"])  # no filter table: nothing is created
        assert sh("nft", "list", "ruleset").strip() == ""

        for tool in ("iptables", "ip6tables"):
            sh(tool, "-P", "FORWARD", "DROP")
            sh(tool, "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")
        fw.setup([NET], PORTS)
        fw.ensure_forward_accept(["br-live", "br-b"])
        fw.ensure_forward_accept(["br-b", "br-live"])
        for tool in ("iptables", "ip6tables"):
            forward = sh(tool, "-S", "FORWARD").splitlines()
            assert forward == [
                "-P FORWARD DROP",
                "-A FORWARD -i docker0 -j ACCEPT",
                "-A FORWARD -j BERTH-FORWARD",
            ], forward
            assert sh(tool, "-S", "BERTH-FORWARD").splitlines() == [
                "-N BERTH-FORWARD",
                "-A BERTH-FORWARD -i br-b -j ACCEPT",
                "-A BERTH-FORWARD -o br-b -j ACCEPT",
                "-A BERTH-FORWARD -i br-live -j ACCEPT",
                "-A BERTH-FORWARD -o br-live -j ACCEPT",
            ]
        sh("iptables-nft", "-L", "-n")

        fw.ensure_forward_accept(["br-live"])
        assert "br-b" not in sh("iptables", "-S", "BERTH-FORWARD")
        sh("iptables", "-A", "FORWARD", "-j", "BERTH-FORWARD")  # a duplicate: one remains
        fw.ensure_forward_accept(["br-live"])
        assert sh("iptables", "-S", "FORWARD").count("BERTH-FORWARD") == 1

        fw.teardown()
        for tool in ("iptables", "ip6tables"):
            assert sh(tool, "-S").splitlines() == [
                "-P INPUT ACCEPT",
                "-P FORWARD DROP",
                "-P OUTPUT ACCEPT",
                "-A FORWARD -i docker0 -j ACCEPT",
            ]
        assert "berth" not in sh("nft", "list", "tables")
        """
    )


def test_published_port_reaches_a_container() -> None:
    """127.0.0.1:<hostPort> and a specific host address DNAT to a listener in a second
    namespace behind a bridge; a port that is not published falls through to the host."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs /bin/busybox")
    _in_netns(
        """
        import os, signal, socket, time
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "br-live", "type", "bridge")
        sh("ip", "addr", "add", "10.210.0.1/24", "dev", "br-live")
        sh("ip", "link", "set", "br-live", "up")
        sh("sysctl", "-qw", "net.ipv4.conf.br-live.route_localnet=1", "net.ipv4.ip_forward=1")
        holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        procs = [holder]
        try:
            ns = f"/proc/{holder.pid}/ns/net"
            for _ in range(100):
                if os.readlink(ns) != os.readlink("/proc/self/ns/net"):
                    break
                time.sleep(0.01)
            sh("ip", "link", "add", "vb-live", "type", "veth", "peer", "name", "ve-live")
            sh("ip", "link", "set", "vb-live", "master", "br-live", "up")
            sh("ip", "link", "set", "ve-live", "netns", str(holder.pid))
            inside = ["nsenter", f"--net={ns}"]
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "addr", "add", "10.210.0.2/24", "dev", "ve-live")
            sh(*inside, "ip", "link", "set", "ve-live", "up")
            sh(*inside, "ip", "route", "add", "default", "via", "10.210.0.1")
            procs.append(subprocess.Popen(
                [*inside, "/bin/busybox", "nc", "-ll", "-p", "80",
                 "-e", "/bin/busybox", "echo", "from-container"]))
            local = socket.socket()
            local.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            local.bind(("127.0.0.1", 9999))
            local.listen()

            fw.setup([NetworkRules("br-live", "10.210.0.0/24")], [
                PortRule("tcp", "", 8080, "10.210.0.2", 80),
                PortRule("tcp", "10.210.0.1", 8081, "10.210.0.2", 80),
            ])

            def fetch(addr, port):
                for _ in range(100):
                    try:
                        with socket.create_connection((addr, port), timeout=2) as c:
                            return c.recv(100)
                    except ConnectionRefusedError:
                        time.sleep(0.02)  # the listener is starting
                raise AssertionError(f"{addr}:{port} refused")

            assert fetch("127.0.0.1", 8080) == b"from-container\\n"
            assert fetch("10.210.0.1", 8080) == b"from-container\\n"
            assert fetch("10.210.0.1", 8081) == b"from-container\\n"
            # 127.0.0.1:8081 is published on 10.210.0.1 only, 9999 not at all: the host's
            with socket.create_connection(("127.0.0.1", 9999), timeout=2):
                conn, _ = local.accept()
                conn.close()
            try:
                socket.create_connection(("127.0.0.1", 8081), timeout=2).close()
                raise AssertionError("127.0.0.1:8081 should not be published")
            except ConnectionRefusedError:
                pass
            fw.remove_ports([PortRule("tcp", "", 8080, "10.210.0.2", 80)])
            try:
                socket.create_connection(("127.0.0.1", 8080), timeout=2).close()
                raise AssertionError("127.0.0.1:8080 should be unpublished")
            except ConnectionRefusedError:
                pass
            fw.teardown()
        finally:
            for p in procs:
                p.kill()
                p.wait()
        """
    )
