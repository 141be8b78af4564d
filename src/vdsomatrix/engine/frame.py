"""The frame that carries a guest's result out of it, and the host's reading of the result port.

The guest's /init (images/guest_init.py) writes the probe's stdout to the result port (the
second serial port, ttyS1; on arm64 a 16550 on PCI) framed, so that the host can tell a complete
document from a truncated or damaged one (a guest killed at its deadline, a kernel panic in the
middle of the write)::

    VDSOMATRIX-BEGIN v1 rc=<probe exit status> len=<bytes> sha256=<hex of the bytes>\\n
    <exactly len bytes: the probe's stdout>
    \\nVDSOMATRIX-END\\n

The host reads the port's file as it grows (:class:`ResultPort`): every byte once, and no more
than :data:`PORT_LIMIT` of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from vdsomatrix import contract

BEGIN = b"VDSOMATRIX-BEGIN"
END = b"VDSOMATRIX-END"
CLOSING = b"\n" + END + b"\n"
# A probe document is 1-2 MB; the guest's is held to the same cap as every other backend's.
MAX_PAYLOAD = contract.MAX_OUTPUT
# What the host reads from the result port at most: a payload whose newlines the tty turned
# into CR-LF takes up to twice its size, plus room for noise before the header.
PORT_LIMIT = 2 * MAX_PAYLOAD + (1 << 20)
HEADER_MAX = 200  # bytes a header line may take
TRAILER_WINDOW = 64  # bytes after the payload that are looked at for the end marker
_HEADER = re.compile(
    rb"VDSOMATRIX-BEGIN v1 rc=(?P<rc>-?[0-9]{1,5}) len=(?P<len>[0-9]{1,9}) "
    rb"sha256=(?P<sha>[0-9a-f]{64})\r?\n"
)


@dataclass(frozen=True)
class Frame:
    """What was found on the result port.

    ``status``: "complete" (payload intact), "missing" (no header at all), "truncated" (the header
    promised more bytes than arrived, or the end marker is missing), "corrupt" (the bytes arrived
    but do not match their hash, the header is malformed, or the port carried more than
    :data:`PORT_LIMIT`). ``payload`` is set only when complete.
    """

    status: str
    payload: bytes | None = None
    rc: int | None = None
    problem: str = ""


def _find_header(data: bytes | bytearray, start: int = 0) -> int:
    """Offset of the first BEGIN marker at the start of a line at or after ``start``, or -1."""
    pos = data.find(BEGIN, start)
    while pos > 0 and data[pos - 1 : pos] != b"\n":
        pos = data.find(BEGIN, pos + 1)
    return pos


class FrameParser:
    """The first result frame in the bytes of the result port, fed as they arrive.

    Each byte is looked at once: the header is searched for in new bytes only, the payload is
    hashed as it arrives, and after it only :data:`TRAILER_WINDOW` bytes are kept. Bytes before
    the header are ignored (firmware or kernel noise on the port). The payload is taken by its
    announced length, so its content can never fake an end marker. If the header line ends in
    CR-LF, the guest's tty translated newlines despite being told not to: the translation is
    undone once, and the hash decides. Once the verdict cannot change any more (``decided``),
    further bytes are ignored.
    """

    def __init__(self, limit: int = PORT_LIMIT):
        self.limit = limit
        self.received = 0
        self._head = bytearray()  # the bytes up to the end of the header line
        self._searched = 0  # where in _head the search for the header goes on
        self._header_at = -1
        self._length: int | None = None
        self._rc: int | None = None
        self._digest = ""
        self._crlf = False
        self._held_cr = False  # a CR at the end of a chunk: its LF may come in the next one
        self._payload = bytearray()
        self._sha = hashlib.sha256()
        self._hash_ok: bool | None = None
        self._after = bytearray()
        self._verdict: Frame | None = None

    @property
    def decided(self) -> bool:
        return self._verdict is not None

    def feed(self, data: bytes) -> None:
        if self._verdict is not None or not data:
            return
        room = self.limit - self.received
        over = len(data) > room
        data = data[:room]
        self.received += len(data)
        if self._length is None:
            self._feed_head(data)
        else:
            self._feed_body(data)
        if over and self._verdict is None:
            self._verdict = Frame("corrupt", rc=self._rc, problem=(
                f"more than {self.limit >> 20} MiB on the result port without a complete result"))

    def _feed_head(self, data: bytes) -> None:
        self._head += data
        if self._header_at < 0:
            self._header_at = _find_header(self._head, self._searched)
            if self._header_at < 0:
                self._searched = max(0, len(self._head) - len(BEGIN))
                return
        start = self._header_at
        if self._head.find(b"\n", start, start + HEADER_MAX) < 0:
            if len(self._head) - start >= HEADER_MAX:
                self._malformed()
            return
        match = _HEADER.match(self._head, start)
        if not match:
            self._malformed()
            return
        self._rc, self._length = int(match["rc"]), int(match["len"])
        self._digest = match["sha"].decode()
        if self._length > MAX_PAYLOAD:
            self._verdict = Frame("corrupt", rc=self._rc,
                                  problem=f"result of {self._length} bytes announced: too big")
            return
        self._crlf = match[0].endswith(b"\r\n")
        rest = bytes(self._head[match.end() :])
        self._head = bytearray()
        self._feed_body(rest)

    def _malformed(self) -> None:
        line = bytes(self._head[self._header_at : self._header_at + 120]).split(b"\n", 1)[0]
        self._verdict = Frame("corrupt", problem=f"malformed result header {line[:100]!r}")

    def _feed_body(self, data: bytes) -> None:
        if self._crlf:
            if self._held_cr:
                data = b"\r" + data
            self._held_cr = data.endswith(b"\r")
            data = (data[:-1] if self._held_cr else data).replace(b"\r\n", b"\n")
        missing = self._length - len(self._payload)
        if missing:
            part = data[:missing]
            self._payload += part
            self._sha.update(part)
            data = data[missing:]
        if len(self._payload) < self._length:
            return
        if self._hash_ok is None:
            self._hash_ok = self._sha.hexdigest() == self._digest
            if not self._hash_ok:
                self._verdict = Frame("corrupt", rc=self._rc,
                                      problem="result does not match its sha256")
                return
        self._after += data[: TRAILER_WINDOW - len(self._after)]
        trailer = bytes(self._after).replace(b"\r", b"")
        if trailer.startswith(CLOSING):
            self._verdict = Frame("complete", payload=bytes(self._payload), rc=self._rc)
        elif not CLOSING.startswith(trailer):
            self._verdict = Frame("corrupt", rc=self._rc, problem="no end marker after the result")

    @property
    def complete(self) -> bool:
        """Whether the bytes so far hold a complete frame (the last newline may be missing)."""
        if self._verdict is not None:
            return self._verdict.status == "complete"
        return self._hash_ok is True and self._after.replace(b"\r", b"") == CLOSING[:-1]

    def frame(self) -> Frame:
        """The verdict on the bytes fed so far."""
        if self._verdict is not None:
            return self._verdict
        if self._length is None:
            if self._header_at >= 0:
                return Frame("truncated", problem="result header cut short")
            return Frame("missing", problem="no result header on the result port")
        if len(self._payload) < self._length:
            return Frame("truncated", rc=self._rc, problem=(
                f"result cut short: {len(self._payload)} of {self._length} bytes arrived"))
        if self.complete:
            return Frame("complete", payload=bytes(self._payload), rc=self._rc)
        return Frame("truncated", rc=self._rc, problem="result end marker cut short")


def parse_frame(data: bytes) -> Frame:
    """Check one result frame in the raw bytes of the result port; never raises."""
    parser = FrameParser()
    parser.feed(data)
    return parser.frame()


class ResultPort:
    """The file QEMU writes the result port to, read as it grows: new bytes only, each once,
    into a :class:`FrameParser`, and nothing after its verdict is decided."""

    CHUNK = 1 << 20

    def __init__(self, path: Path, limit: int = PORT_LIMIT):
        self.path = path
        self.parser = FrameParser(limit)
        self._file = None

    def poll(self) -> bool:
        """Read what arrived since the last call; True once a complete frame is there."""
        if self._file is None:
            try:
                self._file = open(self.path, "rb", buffering=0)
            except OSError:
                return False
        while not self.parser.decided:
            chunk = self._file.read(self.CHUNK)
            if not chunk:
                break
            self.parser.feed(chunk)
        return self.parser.complete

    def frame(self) -> Frame:
        self.poll()
        return self.parser.frame()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
