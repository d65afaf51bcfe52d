"""berthd's configuration: dockerd-style flags and a daemon.json-style file.

A key the file does not know, a value of the wrong type, or a setting given
both as a flag and in the file stops the daemon at start with a message
naming it — a typo must never be silently ignored.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from berth import errdefs
from berth.daemon.options import DEFAULT_CERTS_DIR, SHIM_GROUPS, DaemonOptions, RegistryOptions
from berth.daemon.validate import parse_size
from berth.network.ipam import PoolSpec

DEFAULT_HOST = "unix:///run/berth.sock"
DEFAULT_DATA_ROOT = "/var/lib/berth"
DEFAULT_EXEC_ROOT = "/run/berth"
DEFAULT_PIDFILE = "/run/berth.pid"
DEFAULT_CONFIG_FILE = "/etc/berth/daemon.json"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
#: the files of a certificate directory, by flag, as dockerd and the CLI name them
_CERT_FILES = {"tlscacert": "ca.pem", "tlscert": "cert.pem", "tlskey": "key.pem"}


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


@dataclass
class TLSOptions:
    """TLS of the ``tcp://`` hosts, as dockerd's ``--tls*`` flags set it."""

    #: encrypt (``--tls``, implied by ``--tlsverify``)
    enabled: bool = False
    #: require a client certificate signed by *ca* (``--tlsverify``)
    verify: bool = False
    ca: Path = Path("ca.pem")
    cert: Path = Path("cert.pem")
    key: Path = Path("key.pem")
    #: ``--tls`` or ``--tlsverify`` given at all: plain TCP away from loopback is then
    #: the operator's explicit choice (dockerd's ``checkTLSAuthOK``)
    explicit: bool = False


@dataclass
class Config:
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    tls: TLSOptions = field(default_factory=TLSOptions)
    #: host:port of the Prometheus endpoint (``--metrics-addr``); empty: none
    metrics_addr: str = ""
    pidfile: str = DEFAULT_PIDFILE
    log_level: str = "info"
    group: str = "docker"
    options: DaemonOptions = field(default_factory=DaemonOptions)


# daemon.json key → (type check, flag dest)
_FILE_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "hosts": (list, "host"),
    "tls": (bool, "tls"),
    "tlsverify": (bool, "tlsverify"),
    "tlscacert": (str, "tlscacert"),
    "tlscert": (str, "tlscert"),
    "tlskey": (str, "tlskey"),
    "metrics-addr": (str, "metrics_addr"),
    "data-root": (str, "data_root"),
    "exec-root": (str, "exec_root"),
    "pidfile": (str, "pidfile"),
    "log-level": (str, "log_level"),
    "debug": (bool, "debug"),
    "storage-driver": (str, "storage_driver"),
    "group": (str, "group"),
    "log-driver": (str, "log_driver"),
    "log-opts": (dict, "log_opts"),
    "default-shm-size": ((str, int), "default_shm_size"),
    "default-ipc-mode": (str, "default_ipc_mode"),
    "default-cgroupns-mode": (str, "default_cgroupns_mode"),
    "default-runtime": (str, "default_runtime"),
    "labels": (list, "label"),
    "live-restore": (bool, "live_restore"),
    "containerd": (str, "containerd"),
    "containerd-namespace": (str, "containerd_namespace"),
    "cgroup-parent": (str, "cgroup_parent"),
    "shim-group": (str, "shim_group"),
    "bridge": (str, "bridge"),
    "bip": (str, "bip"),
    "fixed-cidr": (str, "fixed_cidr"),
    "ipv6": (bool, "ipv6"),
    "fixed-cidr-v6": (str, "fixed_cidr_v6"),
    "default-address-pools": (list, "default_address_pool"),
    "iptables": (bool, "iptables"),
    "ip-forward": (bool, "ip_forward"),
    "ip-masq": (bool, "ip_masq"),
    "icc": (bool, "icc"),
    "mtu": (int, "mtu"),
    "dns": (list, "dns"),
    "firewall-table": (str, "firewall_table"),
    "insecure-registries": (list, "insecure_registry"),
    "registry-mirrors": (list, "registry_mirror"),
    "registry-certs-dir": (str, "registry_certs_dir"),
    "max-concurrent-downloads": (int, "max_concurrent_downloads"),
    "max-concurrent-uploads": (int, "max_concurrent_uploads"),
    "max-download-attempts": (int, "max_download_attempts"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="berthd",
        description="berth: a Docker Engine written in Python",
    )
    p.add_argument(
        "-H", "--host", action="append", help=f"daemon socket(s) (default {DEFAULT_HOST})"
    )
    remote = p.add_argument_group("remote access (tcp:// hosts)")
    remote.add_argument(
        "--tls",
        nargs="?",
        const=True,
        type=_flag_bool,
        metavar="BOOL",
        help="encrypt tcp:// hosts with TLS (implied by --tlsverify); --tls=false accepts "
        "plain TCP on a non-loopback address",
    )
    remote.add_argument(
        "--tlsverify",
        nargs="?",
        const=True,
        type=_flag_bool,
        metavar="BOOL",
        help="TLS, and only clients with a certificate signed by --tlscacert (default: "
        "true when DOCKER_TLS_VERIFY is set)",
    )
    for flag, what in (
        ("tlscacert", "the CA that signs clients' certificates"),
        ("tlscert", "the server's certificate"),
        ("tlskey", "the server's key"),
    ):
        remote.add_argument(
            f"--{flag}",
            help=f"{what} (default {_CERT_FILES[flag]} in $DOCKER_CERT_PATH or ~/.docker)",
        )
    p.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (dockerd's engine metrics, "
        "berthd's process and API)",
    )
    p.add_argument("--data-root", help=f"root of persistent state (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", help=f"root of runtime state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("-p", "--pidfile", help=f"path of the pid file (default {DEFAULT_PIDFILE})")
    p.add_argument("-l", "--log-level", help="debug, info, warn, error or fatal (default info)")
    p.add_argument("-D", "--debug", action="store_const", const=True, help="debug mode")
    p.add_argument(
        "--config-file", help=f"daemon configuration file (default {DEFAULT_CONFIG_FILE})"
    )
    p.add_argument("-s", "--storage-driver", help="overlay2 (default where supported) or vfs")
    p.add_argument("-G", "--group", help="group that owns the unix socket (default docker)")
    p.add_argument("--log-driver", help="default log driver for containers (default json-file)")
    p.add_argument("--default-shm-size", help="default /dev/shm size (default 64M)")
    p.add_argument("--default-ipc-mode", help="private or shareable (default private)")
    p.add_argument("--default-cgroupns-mode", help="host or private")
    p.add_argument("--default-runtime", help="default OCI runtime (default runc)")
    p.add_argument("--label", action="append", help="a key=value label for the daemon")
    p.add_argument(
        "--live-restore",
        action="store_const",
        const=True,
        help="keep containers running while the daemon is down",
    )
    p.add_argument(
        "--containerd", help="socket of a running containerd to use (default: start our own)"
    )
    p.add_argument(
        "--containerd-namespace", help="containerd namespace for containers (default berth)"
    )
    p.add_argument("--cgroup-parent", help="parent cgroup of every container (default /berth)")
    p.add_argument(
        "--shim-group",
        help="which containers share one containerd shim: container (one each, the default), "
        "project (a compose project's) or all",
    )
    net = p.add_argument_group("networking")
    net.add_argument("-b", "--bridge", help="device of the default bridge network (default berth0)")
    net.add_argument("--bip", help="address/prefix of the default bridge (default: a free /24)")
    net.add_argument("--fixed-cidr", help="IPv4 range of the default bridge's containers")
    net.add_argument(
        "--ipv6", action="store_const", const=True, help="IPv6 on the default bridge as well"
    )
    net.add_argument("--fixed-cidr-v6", help="IPv6 subnet of the default bridge (with --ipv6)")
    net.add_argument(
        "--default-address-pool",
        action="append",
        help="base=CIDR,size=N: where networks' subnets come from (default base=10.210.0.0/15,"
        "size=24)",
    )
    for flag, what in (
        ("iptables", "program berth's nftables rules (NAT, published ports, isolation)"),
        ("ip-forward", "enable net.ipv4.ip_forward"),
        ("ip-masq", "masquerade traffic leaving bridge networks"),
        ("icc", "let containers on the default bridge talk to each other"),
    ):
        net.add_argument(
            f"--{flag}", type=_flag_bool, metavar="BOOL", help=f"{what} (default true)"
        )
    net.add_argument("--mtu", type=int, help="MTU of containers' interfaces (default 1500)")
    net.add_argument("--dns", action="append", help="DNS server for containers (repeatable)")
    net.add_argument(
        "--firewall-table",
        help="name of berth's nftables tables (default berth; one per daemon on a host)",
    )
    reg = p.add_argument_group("registries")
    reg.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST[:PORT]|CIDR",
        help="a registry reached over plain HTTP or TLS without verification (repeatable; "
        "loopback always is)",
    )
    reg.add_argument(
        "--registry-mirror",
        action="append",
        metavar="URL",
        help="a Docker Hub mirror, http(s)://host[:port], tried before Docker Hub (repeatable)",
    )
    reg.add_argument(
        "--registry-certs-dir",
        metavar="DIR",
        help=f"per-registry CAs and client certificates in DIR/<host:port>/ (*.crt; "
        f"*.cert with *.key) (default {DEFAULT_CERTS_DIR}, as dockerd's)",
    )
    reg.add_argument(
        "--max-concurrent-downloads",
        type=int,
        metavar="N",
        help="layers downloaded at once per pull (default 3)",
    )
    reg.add_argument(
        "--max-concurrent-uploads", type=int, metavar="N", help="layers pushed at once (default 5)"
    )
    reg.add_argument(
        "--max-download-attempts",
        type=int,
        metavar="N",
        help="tries of one layer download, 5 s, 10 s, ... apart (default 5)",
    )
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    return p


def _flag_bool(value: str) -> bool:
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {value!r}")


def _pools(raw: list[Any]) -> list[PoolSpec]:
    """``--default-address-pool base=CIDR,size=N`` or daemon.json's objects."""
    out = []
    for item in raw:
        if isinstance(item, str):
            fields = dict(kv.split("=", 1) for kv in item.split(",") if "=" in kv)
        elif isinstance(item, dict):
            fields = {str(k): str(v) for k, v in item.items()}
        else:
            raise ConfigError(f"invalid default address pool: {item!r}")
        try:
            out.append(PoolSpec.parse(fields["base"], int(fields["size"])))
        except (KeyError, ValueError):
            raise ConfigError(
                f"invalid default address pool {item!r}: expected base=CIDR,size=N"
            ) from None
        except errdefs.BerthError as e:
            raise ConfigError(str(e)) from None
    return out


# distribution/reference's domain: dot-separated components, an optional port
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_PORT = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?",
    re.ASCII,
)


def _mirror(url: str) -> str:
    """dockerd's ``ValidateMirror``, its messages and its normal form (one trailing ``/``)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(
            f"invalid mirror: no scheme specified for {json.dumps(url)}: "
            "must use either 'https://' or 'http://'"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise ConfigError(f"invalid mirror: {json.dumps(url)} is not a valid URI: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"invalid mirror: unsupported scheme {json.dumps(parts.scheme)} in {json.dumps(url)}: "
            "must use either 'https://' or 'http://'"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"invalid mirror: query or fragment at end of the URI {json.dumps(url)}")
    if parts.username is not None:
        masked = parts._replace(netloc=f"{parts.username}:xxxxx@{parts.netloc.rpartition('@')[2]}")
        raise ConfigError(
            f"invalid mirror: username/password not allowed in URI {json.dumps(masked.geturl())}"
        )
    if not parts.hostname:
        raise ConfigError(
            f"invalid mirror: no host in {json.dumps(url)}: use http(s)://host[:port]"
        )
    return url.removesuffix("/") + "/"


def _insecure_registry(entry: str) -> str:
    """dockerd's ``loadInsecureRegistries`` for one entry: a CIDR (as its network) or a
    ``host[:port]``; ``http://``/``https://`` are dropped with a warning, as dockerd does."""
    r = "docker.io" if entry == "index.docker.io" else entry
    if r.startswith("-") or r.endswith("-"):
        raise ConfigError(f"invalid index name ({r}). Cannot begin or end with a hyphen")
    for scheme in ("http://", "https://"):
        if r.lower().startswith(scheme):
            logging.getLogger("berthd").warning(
                "insecure registry %s should not contain '%s' and '%s' has been removed from "
                "the insecure registry config",
                r,
                scheme,
                scheme,
            )
            r = r[len(scheme) :]
            break
    else:
        if "://" in r:
            raise ConfigError(f"insecure registry {r} should not contain '://'")
    if "/" in r:
        try:
            return str(ipaddress.ip_network(r, strict=False))
        except ValueError:
            pass
    host, port = r, ""
    m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)|([^:]*):([^:]*)", r)
    if m:
        host, port = (m.group(1), m.group(2)) if m.group(2) is not None else m.group(3, 4)
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not _HOST_PORT.fullmatch(r) and not is_ip:
        raise ConfigError(f"insecure registry {r} is not valid: invalid host {json.dumps(host)}")
    if port and (not port.isdigit() or int(port) > 65535):
        raise ConfigError(f"insecure registry {r} is not valid: invalid port {json.dumps(port)}")
    return r


def _count(value: int, what: str) -> int:
    """A positive count; dockerd's words for a negative one.  (dockerd takes 0 as "no
    limit" for concurrency; berth's transfers need a bound, so 0 is refused as well.)"""
    if value < 0:
        raise ConfigError(f"invalid {what}: {value}")
    if value == 0:
        raise ConfigError(f"invalid {what}: 0: must be at least 1")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"invalid value for {key!r}: every entry must be a string")
    return list(value)


def _registry_options(pick: Callable[[str, str, Any], Any]) -> RegistryOptions:
    """The registry settings from flags or daemon.json, each checked as dockerd checks it."""
    reg = RegistryOptions()
    mirrors = _strings(pick("registry-mirrors", "registry_mirror", []) or [], "registry-mirrors")
    for m in mirrors:
        normal = _mirror(m.strip())
        if normal not in reg.mirrors:
            reg.mirrors.append(normal)
    insecure = _strings(
        pick("insecure-registries", "insecure_registry", []) or [], "insecure-registries"
    )
    for entry in insecure:
        normal = _insecure_registry(entry.strip())
        if normal not in reg.insecure_registries:
            reg.insecure_registries.append(normal)
    certs = pick("registry-certs-dir", "registry_certs_dir", "")
    reg.certs_dir = Path(certs).absolute() if certs else DEFAULT_CERTS_DIR
    reg.max_concurrent_downloads = _count(
        pick("max-concurrent-downloads", "max_concurrent_downloads", 3),
        "max concurrent downloads",
    )
    reg.max_concurrent_uploads = _count(
        pick("max-concurrent-uploads", "max_concurrent_uploads", 5), "max concurrent uploads"
    )
    reg.max_download_attempts = _count(
        pick("max-download-attempts", "max_download_attempts", 5), "max download attempts"
    )
    return reg


def _load_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"unable to configure the daemon: {path} does not exist") from None
        return {}
    except OSError as e:
        raise ConfigError(f"unable to read {path}: {e}") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"the following directives don't match any configuration option: {', '.join(unknown)}"
        )
    for key, value in data.items():
        typ, _ = _FILE_KEYS[key]
        # JSON true/false must not pass for a number.
        if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise ConfigError(
                f"invalid value for {key!r} in {path}: expected {want}, got {json.dumps(value)}"
            )
    return data


def _size(value: str | int, what: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError:
        raise ConfigError(f"invalid {what}: {value!r}") from None


def load(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = args.config_file is not None
    file_data = _load_file(Path(args.config_file or DEFAULT_CONFIG_FILE), explicit)
    both = sorted(
        k
        for k, (_, dest) in _FILE_KEYS.items()
        if k in file_data and getattr(args, dest) is not None
    )
    if both:
        raise ConfigError(
            "the following directives are specified both as a flag and in the configuration "
            f"file: {', '.join(both)}"
        )

    def pick(key: str, dest: str, default: Any) -> Any:
        value = getattr(args, dest)
        if value is not None:
            return value
        return file_data.get(key, default)

    cfg = Config()
    cfg.hosts = list(pick("hosts", "host", None) or [DEFAULT_HOST])
    cfg.tls = _tls_options(pick)
    cfg.metrics_addr = pick("metrics-addr", "metrics_addr", "")
    if cfg.metrics_addr:
        parse_host("tcp://" + cfg.metrics_addr)
    cfg.pidfile = pick("pidfile", "pidfile", DEFAULT_PIDFILE)
    debug = bool(pick("debug", "debug", False))
    cfg.log_level = pick("log-level", "log_level", "debug" if debug else "info")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"invalid log level {cfg.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
        )
    cfg.group = pick("group", "group", "docker")
    opts = cfg.options
    opts.data_root = Path(pick("data-root", "data_root", DEFAULT_DATA_ROOT)).absolute()
    opts.exec_root = Path(pick("exec-root", "exec_root", DEFAULT_EXEC_ROOT)).absolute()
    opts.storage_driver = pick("storage-driver", "storage_driver", "")
    if opts.storage_driver not in ("", "overlay2", "vfs"):
        raise ConfigError(
            f"unknown storage driver {opts.storage_driver!r}: berth supports overlay2 and vfs"
        )
    opts.log_driver = pick("log-driver", "log_driver", "json-file")
    if opts.log_driver not in ("json-file", "local", "none"):
        raise ConfigError(f"unknown log driver {opts.log_driver!r}: use json-file, local or none")
    log_opts = file_data.get("log-opts", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in log_opts.items()):
        raise ConfigError("invalid value for 'log-opts': every option must be a string")
    opts.log_opts = dict(log_opts)
    opts.default_shm_size = _size(
        pick("default-shm-size", "default_shm_size", 64 << 20), "default-shm-size"
    )
    opts.default_ipc_mode = pick("default-ipc-mode", "default_ipc_mode", "private")
    if opts.default_ipc_mode not in ("private", "shareable"):
        raise ConfigError(
            f"invalid default-ipc-mode {opts.default_ipc_mode!r}: use private or shareable"
        )
    opts.default_cgroupns_mode = pick("default-cgroupns-mode", "default_cgroupns_mode", "")
    if opts.default_cgroupns_mode not in ("", "host", "private"):
        raise ConfigError(
            f"invalid default-cgroupns-mode {opts.default_cgroupns_mode!r}: use host or private"
        )
    opts.default_runtime = pick("default-runtime", "default_runtime", "runc")
    opts.labels = list(pick("labels", "label", []) or [])
    opts.live_restore = bool(pick("live-restore", "live_restore", False))
    opts.containerd = pick("containerd", "containerd", "")
    if opts.containerd.startswith("unix://"):
        opts.containerd = opts.containerd[len("unix://") :]
    opts.containerd_namespace = pick("containerd-namespace", "containerd_namespace", "berth")
    opts.cgroup_parent = pick("cgroup-parent", "cgroup_parent", "/berth")
    if not opts.cgroup_parent.startswith("/") or ".." in opts.cgroup_parent.split("/"):
        raise ConfigError(
            f"invalid cgroup-parent {opts.cgroup_parent!r}: use an absolute cgroup path "
            "such as /berth"
        )
    opts.shim_group = pick("shim-group", "shim_group", "container")
    if opts.shim_group not in SHIM_GROUPS:
        raise ConfigError(f"invalid shim-group {opts.shim_group!r}: use container, project or all")
    net = opts.network
    net.bridge = pick("bridge", "bridge", "berth0")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", net.bridge):
        raise ConfigError(f"invalid bridge name {net.bridge!r}")
    net.bip = pick("bip", "bip", "")
    net.fixed_cidr = pick("fixed-cidr", "fixed_cidr", "")
    net.ipv6 = bool(pick("ipv6", "ipv6", False))
    net.fixed_cidr_v6 = pick("fixed-cidr-v6", "fixed_cidr_v6", "")
    if net.fixed_cidr_v6:
        try:
            if ipaddress.ip_network(net.fixed_cidr_v6, strict=False).version != 6:
                raise ValueError
        except ValueError:
            raise ConfigError(f"invalid fixed-cidr-v6 {net.fixed_cidr_v6!r}") from None
    for key, value in (("bip", net.bip), ("fixed-cidr", net.fixed_cidr)):
        if value:
            try:
                ipaddress.ip_interface(value)
            except ValueError:
                raise ConfigError(f"invalid {key} {value!r}: expected an address/prefix") from None
    pools = pick("default-address-pools", "default_address_pool", None)
    if pools:
        net.default_address_pools = _pools(pools)
    net.iptables = bool(pick("iptables", "iptables", True))
    net.ip_forward = bool(pick("ip-forward", "ip_forward", True))
    net.ip_masq = bool(pick("ip-masq", "ip_masq", True))
    net.icc = bool(pick("icc", "icc", True))
    net.mtu = int(pick("mtu", "mtu", 1500))
    net.dns = [str(x) for x in pick("dns", "dns", []) or []]
    for server in net.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(f"invalid dns server {server!r}: expected an IP address") from None
    net.firewall_table = pick("firewall-table", "firewall_table", "berth")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", net.firewall_table):
        raise ConfigError(f"invalid firewall-table {net.firewall_table!r}")
    opts.registry = _registry_options(pick)
    opts.debug = debug
    opts.hosts = cfg.hosts
    opts.tls, opts.tls_verify = cfg.tls.enabled, cfg.tls.verify
    for host in cfg.hosts:
        kind, addr, _ = parse_host(host)
        if kind == "tcp" and not cfg.tls.enabled and not cfg.tls.explicit and not loopback(addr):
            raise ConfigError(
                f"refusing to serve the API on {host} without TLS: anyone who can reach it "
                "gets root on this host. Use --tlsverify with --tlscacert, --tlscert and "
                "--tlskey, or pass --tls=false to accept the risk"
            )
    return cfg, args


def _tls_options(pick: Callable[[str, str, Any], Any]) -> TLSOptions:
    tls, verify = pick("tls", "tls", None), pick("tlsverify", "tlsverify", None)
    explicit = tls is not None or verify is not None
    if verify is None:
        verify = bool(os.environ.get("DOCKER_TLS_VERIFY"))
    cert_dir = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    return TLSOptions(
        enabled=bool(tls) or bool(verify),
        verify=bool(verify),
        ca=Path(pick("tlscacert", "tlscacert", cert_dir / _CERT_FILES["tlscacert"])),
        cert=Path(pick("tlscert", "tlscert", cert_dir / _CERT_FILES["tlscert"])),
        key=Path(pick("tlskey", "tlskey", cert_dir / _CERT_FILES["tlskey"])),
        explicit=explicit,
    )


def loopback(addr: str) -> bool:
    """Whether a ``tcp://`` host's address only this machine reaches: ``localhost`` or a
    loopback IP (a name is not looked up: it counts as reachable from outside)."""
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def parse_host(host: str) -> tuple[str, str, int]:
    """``unix:///path`` → ("unix", path, 0); ``tcp://h:p`` → ("tcp", h, p)."""
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError(f"invalid host {host!r}: the socket path must be absolute")
        return "unix", path, 0
    if host.startswith("tcp://"):
        rest = host[len("tcp://") :]
        h, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"invalid host {host!r}: expected tcp://host:port")
        return "tcp", h.strip("[]") or "127.0.0.1", int(port)
    if host.startswith("/"):
        return "unix", host, 0
    raise ConfigError(f"invalid host {host!r}: use unix:///path or tcp://host:port")
