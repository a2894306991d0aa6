"""Reading /proc for the load tests: processes, their CPU time and their memory (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat(path: str | Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it: state, ppid, pgrp, ...) of a /proc stat file, or None
    when the process or thread is gone. Field k of proc(5) is at index k - 3."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 2 :].split()


def processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, stat fields after it) of every live process."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (found := stat(Path(entry.path, "stat"))) is not None:
            yield int(entry.name), *found


def cpu_s(fields: list[str], children: bool = False) -> float:
    """User + system CPU seconds from stat fields (with `children`: also reaped children's)."""
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / TICK


def group_cpu_s(pgid: int) -> float:
    """CPU seconds of the live processes of process group `pgid` and the children they reaped."""
    return sum(cpu_s(fields, children=True) for _, _, fields in processes() if int(fields[2]) == pgid)


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if (found := stat(f"/proc/{pid}/task/{tid}/stat")) is not None:
            out[tid] = cpu_s(found[1])
    return out


def cpu_s_by_thread_name(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (e.g. the front's I/O threads)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if (found := stat(f"/proc/{pid}/task/{tid}/stat")) is not None:
            out[found[0]] = out.get(found[0], 0.0) + cpu_s(found[1])
    return out


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return [child for child, _, fields in processes() if int(fields[1]) == pid]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
