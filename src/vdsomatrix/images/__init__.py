"""What environments start from, built locally and cached: no registry, no download at run time
but the Debian archive's.

    rootfs.py             base images: debootstrap a suite's root filesystem, import it
    probe_image.py        probe images: the Dockerfile on a base, tags by content hash
    runtimes.py           the language-runtime layer on a suite's probe image
    foreign.py            other architectures' userlands through qemu-user (binfmt_misc)
    stale.py              images no current recipe names, and removing them
    kernels.py            Debian kernels, fetched by package name, unpacked and cached
    initramfs.py          probe images turned into initramfs files for guests, and their cache
    initramfs_contents.py which files of an image a guest needs
    guest_init.py         what a guest runs: its /init, and the kernel command line it reads

Containers these need (a build, a copy, an export) are engine/container.py's Container; nothing
here imports a backend.
"""
