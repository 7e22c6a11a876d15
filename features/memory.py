"""How much memory this process can still have: what the heads' memory policy, the fine-tune's activation
cache and a KerasHub preset's size check compare with.

The machine's available memory is not the whole answer: a process under ``ulimit -v`` (``RLIMIT_AS``) or in a
container's cgroup runs out first (20 GB of parameters under a 6 GB cap ended in a TensorFlow traceback).
"""

from __future__ import annotations

from pathlib import Path

from .io import read_system_file


def available_memory() -> int:
    """Bytes of memory this process can still have: the machine's available memory without swapping (Linux's
    MemAvailable: reclaimable cache counts), or less where the process's own limits are lower: its address
    space under ``RLIMIT_AS`` (``ulimit -v``) and its cgroup's ``memory.max`` less what the cgroup uses."""
    import resource

    import psutil

    found = [int(psutil.virtual_memory().available)]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(max(0, soft - psutil.Process().memory_info().vms))
    headroom = _cgroup_headroom()
    if headroom is not None:
        found.append(headroom)
    return min(found)


def _cgroup_headroom(root: str = "/sys/fs/cgroup", cgroups: str = "/proc/self/cgroup") -> int | None:
    """The memory limit less the usage of this process's cgroup and each above it, the least (v2's
    ``memory.max`` and ``memory.current``, or v1's ``memory.limit_in_bytes`` and ``memory.usage_in_bytes``);
    None where no cgroup sets a limit."""
    try:
        lines = read_system_file(cgroups).splitlines()
    except OSError:
        return None
    least = None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, files = Path(root), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = Path(root) / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        here = base / path.strip().lstrip("/")
        for folder in (here, *[p for p in here.parents if p.is_relative_to(base)]):
            try:
                limit = read_system_file(folder / files[0]).strip()
                used = int(read_system_file(folder / files[1]).strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 1 << 60:  # v1 says "no limit" with a number near 2**63
                headroom = int(limit) - used
                least = headroom if least is None else min(least, headroom)
    return None if least is None else max(0, least)
