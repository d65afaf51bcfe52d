"""Signal names and numbers as moby/sys/signal parses them (Linux)."""

from __future__ import annotations

from berth import errdefs

SIGNALS: dict[str, int] = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8,
    "HUP": 1, "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13,
    "POLL": 29, "PROF": 27, "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16,
    "STOP": 19, "SYS": 31, "TERM": 15, "TRAP": 5, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12, "VTALRM": 26, "WINCH": 28,
    "XCPU": 24, "XFSZ": 25,
    "RTMIN": 34, "RTMAX": 64,
}  # fmt: skip
for _i in range(1, 16):
    SIGNALS[f"RTMIN+{_i}"] = 34 + _i
    SIGNALS[f"RTMAX-{_i}"] = 64 - _i


def parse_signal(raw: str) -> int:
    """A signal number from ``"9"``, ``"KILL"`` or ``"SIGKILL"``; InvalidParameter otherwise."""
    try:
        num = int(raw)
    except ValueError:
        pass
    else:
        if num == 0:
            raise errdefs.InvalidParameter(f"invalid signal: {raw}")
        return num
    name = raw.upper().removeprefix("SIG")
    num = SIGNALS.get(name, 0)
    if num == 0:
        raise errdefs.InvalidParameter(f"invalid signal: {raw}")
    return num
