"""``docker top``: the host's ``ps`` output, limited to the container's processes."""

from __future__ import annotations

import subprocess
from typing import Any

from berth import errdefs


def top(pids: list[int], ps_args: str) -> dict[str, Any]:
    args = ps_args.split() if ps_args else ["-ef"]
    proc = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise errdefs.InvalidParameter(f"ps: {proc.stderr.strip() or 'failed'}")
    lines = proc.stdout.splitlines()
    if not lines:
        raise errdefs.System("ps printed nothing")
    titles = lines[0].split()
    try:
        pid_col = titles.index("PID")
    except ValueError:
        raise errdefs.InvalidParameter(
            f"Couldn't find PID field in ps output for ps_args {ps_args!r}"
        ) from None
    wanted = set(pids)
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) <= pid_col:
            continue
        try:
            pid = int(fields[pid_col])
        except ValueError:
            continue
        if pid in wanted:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}
