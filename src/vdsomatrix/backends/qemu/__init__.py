"""The QEMU backend: the probe in a Debian kernel booted under QEMU, one module per concern.

    kernels.py    Debian kernels, fetched by package name with apt, unpacked and cached
    initramfs.py  probe images turned into initramfs files, and the cache of them
    guest.py      the guest's /init, its kernel command line, and the result frame on ttyS1
    accel.py      KVM or TCG: a short KVM boot decides, remembered per host boot
    workdirs.py   work folders named by their owner process, so leftovers of dead runs go
    backend.py    the QEMU command, host-CPU pinning, the boot loop, and the Backend
"""

from vdsomatrix.backends.qemu.backend import QemuBackend

__all__ = ["QemuBackend"]
