// vdsomatrix: how fast, and through which door, Rust's std reads its clocks.
// The runtimes contract's command line (the same for every runtime program):
//   timing-rust time CALL ITERATIONS ROUNDS   one JSON line: ns per call of each round
//   timing-rust loop CALL ITERATIONS          fixed warm-up, then ITERATIONS calls
//   timing-rust calls                         the CALL ids, as a JSON list
// One file, std only, rustc 1.48+: `rustc -O timing.rs`. build.sh passes the compiler's version
// in TIMING_RUSTC_VERSION at build time (Rust has no run-time version of itself).
use std::env;
use std::process;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const CALLS: [&str; 3] = ["Instant::now()", "SystemTime::now()", "std::os::unix::process::parent_id()"];
const LOOP_WARMUP: u64 = 20_000; // loop mode: the same warm-up whatever ITERATIONS is
const WARMUP_MIN_NS: u128 = 500_000_000; // time mode: at least 0.5 s ...
const WARMUP_MIN_ROUNDS: u64 = 5; // ... and at least 5 rounds ...
const WARMUP_MAX_NS: u128 = 3_000_000_000; // ... but no more than 3 s (emulators)

#[inline(never)]
fn instant_now(n: u64, base: Instant) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        if Instant::now() == base {
            acc += 1;
        }
    }
    acc
}

#[inline(never)]
fn system_time_now(n: u64) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        if SystemTime::now() == UNIX_EPOCH {
            acc += 1;
        }
    }
    acc
}

#[inline(never)]
fn parent_id(n: u64) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        acc = acc.wrapping_add(u64::from(std::os::unix::process::parent_id()));
    }
    acc
}

fn run(call: usize, n: u64, base: Instant) -> u64 {
    match call {
        0 => instant_now(n, base),
        1 => system_time_now(n),
        _ => parent_id(n),
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn version() -> String {
    match option_env!("TIMING_RUSTC_VERSION") {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => String::from("rustc (version not recorded at build time)"),
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("timing-rust: {}", why);
    eprintln!("usage: timing-rust time CALL ITERATIONS ROUNDS | loop CALL ITERATIONS | calls");
    2
}

fn real_main(args: &[String], sink: &mut u64) -> i32 {
    if args.len() == 1 && args[0] == "calls" {
        let list: Vec<String> = CALLS.iter().map(|c| quote(c)).collect();
        println!("[{}]", list.join(", "));
        return 0;
    }
    let timed = args.len() == 4 && args[0] == "time";
    if !timed && !(args.len() == 3 && args[0] == "loop") {
        return usage("bad arguments");
    }
    let call = match CALLS.iter().position(|c| *c == args[1]) {
        Some(i) => i,
        None => return usage(&format!("unknown call {}", args[1])),
    };
    let n: u64 = match args[2].parse() {
        Ok(v) if v >= 1 => v,
        _ => return usage("ITERATIONS must be an integer >= 1"),
    };
    let rounds: u64 = if timed {
        match args[3].parse() {
            Ok(v) if v >= 1 => v,
            _ => return usage("ROUNDS must be an integer >= 1"),
        }
    } else {
        1
    };
    let base = Instant::now();
    if !timed {
        *sink = sink.wrapping_add(run(call, LOOP_WARMUP, base));
        *sink = sink.wrapping_add(run(call, n, base));
        println!("{{\"call\": {}, \"iterations\": {}}}", quote(CALLS[call]), n);
        return 0;
    }
    let (mut warm_calls, mut warm_rounds, mut warm_ns) = (0u64, 0u64, 0u128);
    let start = Instant::now();
    while warm_rounds < WARMUP_MIN_ROUNDS || warm_ns < WARMUP_MIN_NS {
        *sink = sink.wrapping_add(run(call, n, base));
        warm_calls += n;
        warm_rounds += 1;
        warm_ns = start.elapsed().as_nanos();
        if warm_ns >= WARMUP_MAX_NS {
            break;
        }
    }
    let mut per_call = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        *sink = sink.wrapping_add(run(call, n, base));
        let ns = t0.elapsed().as_nanos();
        per_call.push(format!("{:.3}", ns as f64 / n as f64));
    }
    println!(
        "{{\"call\": {}, \"ns_per_call\": [{}], \"iterations\": {}, \"warmup_calls\": {}, \"warmup_ns\": {}, \"version\": {}}}",
        quote(CALLS[call]),
        per_call.join(", "),
        n,
        warm_calls,
        warm_ns,
        quote(&version())
    );
    0
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let mut sink = 0u64;
    let rc = real_main(&args, &mut sink);
    eprintln!("sink {}", sink);
    process::exit(rc);
}
