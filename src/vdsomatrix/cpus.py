"""Host CPUs claimed one per measurement, so that measurements may run side by side.

A measurement that is pinned to a host CPU no other measurement of the run holds (a QEMU guest's
vCPU thread, a container's cpuset) competes with the others for no CPU time. The claim is a lock
file per CPU (flock on its own open), so it works across threads and processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from vdsomatrix.paths import cache_dir, lock_if_free


@contextlib.contextmanager
def claim_host_cpu() -> Iterator[int | None]:
    """Hold the first host CPU that nobody else holds, for as long as the block runs.

    When every CPU is taken, one is still given (shared: the caller's measurement then competes,
    which the runner's schedule avoids by never running more at once than there are CPUs); None
    when this process cannot read its CPU affinity at all.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        yield None
        return
    for cpu in cpus:
        with lock_if_free(cache_dir() / "host-cpus" / f"cpu{cpu}.lock") as free:
            if free:
                yield cpu
                return
    yield cpus[os.getpid() % len(cpus)]
