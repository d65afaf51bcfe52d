"""/etc/hostname, /etc/hosts and /etc/resolv.conf of a container.

They live in the container directory and are bind-mounted over the empty
files the init layer made, as dockerd does.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from berth.types.container import HostConfig
from berth.utils.atomic import write_file

_DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
_DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")
_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)", re.MULTILINE)


def _host_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def hosts_content(
    hostname: str,
    hc: HostConfig,
    ip: str = "",
    gateway: str = "",
    domainname: str = "",
    links: list[str] | None = None,
) -> str:
    if hc.network_mode == "host":
        content = _host_file("/etc/hosts") or _DEFAULT_HOSTS
    else:
        content = _DEFAULT_HOSTS
        if ip:
            # libnetwork's updateHostsFile: the FQDN first when there is a domain name
            names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
            content += f"{ip}\t{names}\n"
    for line in links or []:
        content += line + "\n"
    for entry in hc.extra_hosts or []:
        name, sep, addr = entry.partition("=") if "=" in entry else entry.partition(":")
        if not sep:
            continue
        if addr == "host-gateway":
            addr = gateway or "127.0.0.1"
        content += f"{addr.strip('[]')}\t{name}\n"
    return content


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


def resolv_conf_content(
    hc: HostConfig, resolver: str = "", daemon_dns: list[str] | None = None
) -> str:
    """The host's resolv.conf, minus loopback servers a container cannot reach.

    On a user-defined network the one nameserver is berth's *resolver* (which forwards
    to ``--dns`` or the host's servers), and search domains and options pass through.
    """
    host = _host_file("/etc/resolv.conf")
    if hc.network_mode == "host" and not (hc.dns or hc.dns_search or hc.dns_options):
        return host
    lines = []
    searches: list[str] = []
    options: list[str] = []
    servers: list[str] = []
    for line in host.splitlines():
        stripped = line.strip()
        if stripped.startswith("nameserver"):
            parts = stripped.split()
            if len(parts) > 1 and (hc.network_mode == "host" or not _is_loopback(parts[1])):
                servers.append(parts[1])
        elif stripped.startswith(("search", "domain")):
            searches = stripped.split()[1:]
        elif stripped.startswith("options"):
            options = stripped.split()[1:]
    if daemon_dns:
        servers = list(daemon_dns)
    if hc.dns:
        servers = list(hc.dns)
    if resolver:
        servers = [resolver]
    if hc.dns_search:
        searches = [] if hc.dns_search == ["."] else list(hc.dns_search)
    if hc.dns_options:
        options = list(hc.dns_options)
    if not servers:
        servers = list(_DEFAULT_DNS)
    if searches:
        lines.append("search " + " ".join(searches))
    lines.extend(f"nameserver {s}" for s in servers)
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_network_files(
    root: Path,
    hostname: str,
    hc: HostConfig,
    ip: str = "",
    gateway: str = "",
    resolver: str = "",
    daemon_dns: list[str] | None = None,
    domainname: str = "",
    links: list[str] | None = None,
) -> tuple[str, str, str]:
    """Write the three files under *root*; return (hostname, hosts, resolv.conf) paths."""
    paths = (root / "hostname", root / "hosts", root / "resolv.conf")
    write_file(paths[0], f"{hostname}\n".encode(), 0o644)
    write_file(
        paths[1], hosts_content(hostname, hc, ip, gateway, domainname, links).encode(), 0o644
    )
    write_file(paths[2], resolv_conf_content(hc, resolver, daemon_dns).encode(), 0o644)
    return str(paths[0]), str(paths[1]), str(paths[2])
