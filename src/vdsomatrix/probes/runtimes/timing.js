// vdsomatrix: how fast, and through which door, Node.js reads its clocks.
// The runtimes contract's command line (the same for every runtime program):
//   node timing.js time CALL ITERATIONS ROUNDS   one JSON line: ns per call of each round
//   node timing.js loop CALL ITERATIONS          fixed warm-up, then ITERATIONS calls
//   node timing.js calls                         the CALL ids, as a JSON list
// Node 12+: process.hrtime.bigint (10.7+); performance from perf_hooks (a global only from 16).
'use strict';
const { performance } = require('perf_hooks');

// One function per call, each a loop of its own, so that V8 optimises each monomorphic.
const CALLS = {
  'process.hrtime.bigint()': (n) => {
    let zeros = 0;
    for (let i = 0; i < n; i++) if (process.hrtime.bigint() === 0n) zeros++;
    return zeros;
  },
  'Date.now()': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += Date.now();
    return acc;
  },
  'performance.now()': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += performance.now();
    return acc;
  },
  'process.ppid': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += process.ppid;
    return acc;
  },
};
const LOOP_WARMUP = 20000;             // loop mode: the same warm-up whatever ITERATIONS is
const WARMUP_MIN_NS = 500000000n;      // time mode: at least 0.5 s ...
const WARMUP_MIN_ROUNDS = 5;           // ... and at least 5 rounds ...
const WARMUP_MAX_NS = 3000000000n;     // ... but no more than 3 s (emulators)

let sink = 0;

function usage(why) {
  process.stderr.write('timing.js: ' + why + '\nusage: timing.js time CALL ITERATIONS ROUNDS | ' +
                       'loop CALL ITERATIONS | calls\n');
  return 2;
}

function main(argv) {
  if (argv.length === 1 && argv[0] === 'calls') {
    process.stdout.write(JSON.stringify(Object.keys(CALLS)) + '\n');
    return 0;
  }
  const timed = argv.length === 4 && argv[0] === 'time';
  if (!timed && !(argv.length === 3 && argv[0] === 'loop')) return usage('bad arguments');
  if (!Object.prototype.hasOwnProperty.call(CALLS, argv[1])) return usage('unknown call ' + argv[1]);
  const run = CALLS[argv[1]];
  const n = Number(argv[2]);
  const rounds = timed ? Number(argv[3]) : 1;
  if (!Number.isInteger(n) || !Number.isInteger(rounds) || n < 1 || rounds < 1) {
    return usage('ITERATIONS and ROUNDS must be integers >= 1');
  }
  if (!timed) {
    sink += run(LOOP_WARMUP);
    sink += run(n);
    process.stdout.write(JSON.stringify({ call: argv[1], iterations: n }) + '\n');
    return 0;
  }
  const clock = process.hrtime.bigint;
  let warmCalls = 0;
  let warmRounds = 0;
  let warmNs = 0n;
  const start = clock();
  while (warmRounds < WARMUP_MIN_ROUNDS || warmNs < WARMUP_MIN_NS) {
    sink += run(n);
    warmCalls += n;
    warmRounds++;
    warmNs = clock() - start;
    if (warmNs >= WARMUP_MAX_NS) break;
  }
  const perCall = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = clock();
    sink += run(n);
    const t1 = clock();
    perCall.push(Math.round(Number(t1 - t0) / n * 1000) / 1000);
  }
  process.stdout.write(JSON.stringify({
    call: argv[1], ns_per_call: perCall, iterations: n, warmup_calls: warmCalls,
    warmup_ns: Number(warmNs), version: process.version,
  }) + '\n');
  return 0;
}

const rc = main(process.argv.slice(2));
process.stderr.write('sink ' + sink + '\n');
process.exitCode = rc;
