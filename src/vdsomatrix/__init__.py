"""vdsomatrix: vDSO, vsyscall and system-call entry, measured across a matrix of environments."""

__version__ = "0.1.0"
SCHEMA = "vdsomatrix/1"
