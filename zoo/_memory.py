"""How much memory this process can still get, and sizes for people: one probe for every check
that refuses an allocation before making it (``zoo.budget`` for models, the data readers for
files). Standard library only: the data readers run without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_FILES = (  # (limit, usage, stat key of reclaimable page cache): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "inactive_file"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "total_inactive_file"),
)
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def host_memory_available() -> int | None:
    """Bytes this process can still allocate on the host: the least of the machine's available
    memory (``MemAvailable`` of /proc/meminfo, else sysconf's free pages), what the cgroup (a
    container's limit) leaves, and what ``RLIMIT_AS`` (``ulimit -v``) leaves of the address
    space; None when none of them is known."""
    machine = _meminfo_available() or _sysconf_available()
    limits = [x for x in (machine, _cgroup_headroom(), _address_space_headroom()) if x is not None]
    return max(0, min(limits)) if limits else None


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``, one decimal; sizes past the exbibyte stay in EiB."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "bytes":
                return f"{value:.0f} bytes"
            return f"{value:.1f} {unit}" if abs(value) < 1e6 else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_headroom() -> int | None:
    """The cgroup's limit minus its usage (page cache it can drop not counted); None if unlimited."""
    for limit_file, usage_file, reclaimable_key in CGROUP_FILES:
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:  # v1 writes "unlimited" as ~2**63
            return None
        try:
            stats = dict(line.split() for line in Path(limit_file).with_name(
                "memory.stat").read_text().splitlines() if line.count(" ") == 1)
            usage -= int(stats.get(reclaimable_key, 0))
        except (OSError, ValueError):
            pass
        return max(int(limit_text) - usage, 0)
    return None


def _address_space_headroom() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as handle:
            size = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
        return max(soft - size, 0)
    except (ImportError, OSError, ValueError, StopIteration):
        return None
