"""The child process of ``analyse_bounded``: one analysis under resource limits.

    python -m vdsomatrix.analysis.worker --address-space BYTES --cpu-seconds N < request.json

reads ``{"vdso": ..., "artefacts": ..., "environment": {"libc": ...}}`` (the parts of a result
document the analysis reads) on stdin and writes ``analyse_result`` of it as JSON on stdout.
The limits are set before the input is read, so that nothing the input makes the analysis do
can outgrow them: RLIMIT_AS turns a runaway allocation into a MemoryError (exit status
EXIT_OUT_OF_MEMORY), RLIMIT_CPU into SIGXCPU and then SIGKILL. No core files are written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

from vdsomatrix.analysis import EXIT_OUT_OF_MEMORY, analyse_result

CPU_GRACE = 2  # seconds between SIGXCPU (the soft limit) and SIGKILL (the hard one)


def _within(limit: int, soft: int, hard: int) -> tuple[int, int]:
    """(soft, hard), neither above the current hard limit (which only root could raise)."""
    _current, ceiling = resource.getrlimit(limit)
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    return soft, hard


def set_limits(address_space: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS,
                       _within(resource.RLIMIT_AS, address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CPU,
                       _within(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + CPU_GRACE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdsomatrix.analysis.worker")
    parser.add_argument("--address-space", type=int, required=True, help="RLIMIT_AS, bytes")
    parser.add_argument("--cpu-seconds", type=int, required=True, help="RLIMIT_CPU, seconds")
    args = parser.parse_args(argv)
    set_limits(args.address_space, args.cpu_seconds)
    try:
        request = json.loads(sys.stdin.buffer.read())  # written by analyse_bounded itself
        result = analyse_result(request)
        output = json.dumps(result, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except MemoryError:
        os.write(2, b"MemoryError: the analysis reached its address-space limit\n")
        return EXIT_OUT_OF_MEMORY
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
