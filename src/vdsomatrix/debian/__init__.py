"""The Debian archive: the mirror this machine's apt uses, its keyring, and what it serves.

    archive.py    the mirror (from /etc/apt/sources.list*, or VDSOMATRIX_MIRROR) and keyring
"""
