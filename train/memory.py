"""Memory of a CPU training run: the measured peak, the memory available, and a pre-flight estimate of the peak.

The peak RSS is recorded in metrics.json (`peak_rss_mb`). Before the model is loaded, `check_fits` compares an
estimate of the run's peak with what the machine has, so that a run that cannot fit says so at once with the knobs
to lower, instead of being killed by the kernel minutes later.
"""

from __future__ import annotations

import resource
from pathlib import Path

MB = 1 << 20


def peak_rss_mb() -> float:
    """Peak resident set of this process plus that of its largest finished child (Linux ru_maxrss is in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)


def _meminfo_available(meminfo: Path) -> float | None:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / MB
    return None


def _cgroup_room(cgroup: Path) -> float | None:
    """What the cgroup limit leaves (v2 memory.max, v1 memory.limit_in_bytes), None when there is no limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = cgroup / limit_file, cgroup / usage_file
        if not (limit.exists() and usage.exists()):
            continue
        text = limit.read_text().strip()
        if text == "max" or int(text) >= 1 << 60:  # v1 writes "no limit" as a huge page-aligned number
            return None
        return (int(text) - int(usage.read_text().strip())) / MB
    return None


def available_mb(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Memory this process can still take: MemAvailable, or less where a cgroup limit says so; None if unknown."""
    found = [mb for mb in (_meminfo_available(meminfo) if meminfo.exists() else None, _cgroup_room(cgroup))
             if mb is not None]
    return min(found) if found else None
