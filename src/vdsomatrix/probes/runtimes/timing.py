"""vdsomatrix: how fast, and through which door, Python reads its clocks.

The runtimes contract's command line (the same for every runtime program):
    python3 timing.py time CALL ITERATIONS ROUNDS   one JSON line: ns per call of each round
    python3 timing.py loop CALL ITERATIONS          fixed warm-up, then ITERATIONS calls
    python3 timing.py calls                         the CALL ids, as a JSON list
Standard library only, Python 3.9+.
"""

import json
import os
import sys
import time

CALLS = {
    "time.monotonic_ns()": time.monotonic_ns,
    "time.time_ns()": time.time_ns,
    "time.perf_counter_ns()": time.perf_counter_ns,
    "os.getppid()": os.getppid,
}
LOOP_WARMUP = 20000            # loop mode: the same warm-up whatever ITERATIONS is
WARMUP_MIN_NS = 500_000_000    # time mode: at least 0.5 s ...
WARMUP_MIN_ROUNDS = 5          # ... and at least 5 rounds ...
WARMUP_MAX_NS = 3_000_000_000  # ... but no more than 3 s (emulators)


def run(fn, n):
    acc = 0
    for _ in range(n):
        acc += fn()
    return acc


def usage(why):
    sys.stderr.write("timing.py: %s\nusage: timing.py time CALL ITERATIONS ROUNDS | "
                     "loop CALL ITERATIONS | calls\n" % why)
    return 2


def main(argv):
    if argv == ["calls"]:
        print(json.dumps(list(CALLS)))
        return 0
    timed = len(argv) == 4 and argv[0] == "time"
    if not timed and not (len(argv) == 3 and argv[0] == "loop"):
        return usage("bad arguments")
    fn = CALLS.get(argv[1])
    if fn is None:
        return usage("unknown call %r" % argv[1])
    try:
        n = int(argv[2])
        rounds = int(argv[3]) if timed else 1
    except ValueError:
        return usage("ITERATIONS and ROUNDS must be integers")
    if n < 1 or rounds < 1:
        return usage("ITERATIONS and ROUNDS must be >= 1")
    sink = 0
    if not timed:
        sink += run(fn, LOOP_WARMUP)
        sink += run(fn, n)
        print(json.dumps({"call": argv[1], "iterations": n}))
        sys.stdout.flush()
        sys.stderr.write("sink %d\n" % sink)
        return 0
    clock = time.perf_counter_ns
    warm_calls = warm_rounds = warm_ns = 0
    start = clock()
    while warm_rounds < WARMUP_MIN_ROUNDS or warm_ns < WARMUP_MIN_NS:
        sink += run(fn, n)
        warm_calls += n
        warm_rounds += 1
        warm_ns = clock() - start
        if warm_ns >= WARMUP_MAX_NS:
            break
    per_call = []
    for _ in range(rounds):
        t0 = clock()
        sink += run(fn, n)
        t1 = clock()
        per_call.append(round((t1 - t0) / n, 3))
    print(json.dumps({"call": argv[1], "ns_per_call": per_call, "iterations": n,
                      "warmup_calls": warm_calls, "warmup_ns": warm_ns,
                      "version": sys.version.split()[0]}))
    sys.stdout.flush()
    sys.stderr.write("sink %d\n" % sink)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
