// An independent reference for the Node.js runtime rows (benchmarks/runtime_cost.py): shares no
// code with probes/runtimes/. A fixed time rather than a fixed count, eight calls per
// iteration, the clock read every 1024 iterations.
//
//     node reference.js CALL SECONDS REPEATS   ->  one line: median ns per call
'use strict';
const { performance } = require('perf_hooks');

const EIGHT = {
  'process.hrtime.bigint()': () => {
    const h = process.hrtime.bigint;
    return h() + h() + h() + h() + h() + h() + h() + h();
  },
  'Date.now()': () => Date.now() + Date.now() + Date.now() + Date.now()
    + Date.now() + Date.now() + Date.now() + Date.now(),
  'performance.now()': () => performance.now() + performance.now() + performance.now()
    + performance.now() + performance.now() + performance.now() + performance.now()
    + performance.now(),
  'process.ppid': () => process.ppid + process.ppid + process.ppid + process.ppid
    + process.ppid + process.ppid + process.ppid + process.ppid,
};

let sink = 0;
function perCall(eight, seconds) {
  const budget = BigInt(Math.round(seconds * 1e9));
  const start = process.hrtime.bigint();
  let calls = 0;
  let elapsed;
  do {
    for (let i = 0; i < 1024; i++) sink += Number(eight()) % 7;
    calls += 8 * 1024;
    elapsed = process.hrtime.bigint() - start;
  } while (elapsed < budget);
  return Number(elapsed) / calls;
}

const [call, seconds, repeats] = process.argv.slice(2);
const eight = EIGHT[call];
if (!eight) throw new Error(`unknown call ${call}`);
perCall(eight, Number(seconds));  // warm-up: TurboFan optimises the loop
const results = [];
for (let r = 0; r < Number(repeats); r++) results.push(perCall(eight, Number(seconds)));
results.sort((a, b) => a - b);
console.log(results[Math.floor(results.length / 2)]);
process.stderr.write(`sink ${sink}\n`);
