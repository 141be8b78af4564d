"""The Debian archive: the one client vdsomatrix fetches suites, kernels and runtime packages with.

    archive.py    the mirror (from /etc/apt/sources.list*, or VDSOMATRIX_MIRROR) and keyring
    apt.py        PrivateApt: apt-get over one suite and architecture with private state
                  (update, the Packages index, simulated install + download, exact downloads)
    packages.py   reading a Packages index with python-debian: a fast scan for wanted names,
                  the newest version of each package, Depends
    debs.py       the download cache of .debs (<cache>/debs/<suite>/[<purpose>/]), apt's file
                  names, sharing identical files between suites

Nothing here imports from images/ or backends/: they use it (images/rootfs.py for debootstrap's
mirror, keyring and .deb cache; images/kernels.py and images/runtimes.py for everything else).
"""
