// vdsomatrix: how fast, and through which door, Java reads its clocks.
// Command line (the runtimes contract, shared by every runtime program):
//   java -cp DIR Timing time CALL ITERATIONS ROUNDS   one JSON line: ns per call of each round
//   java -cp DIR Timing loop CALL ITERATIONS          fixed warm-up, then ITERATIONS calls
//   java -cp DIR Timing calls                         the CALL ids, as a JSON list
// Java 8 source level on purpose (javac --release 8): the same class runs on JRE 8 to the newest.
import java.time.Instant;

public final class Timing {
    static final String[] CALLS = {
        "System.nanoTime()", "System.currentTimeMillis()", "Instant.now()", "Thread.yield()"};
    static final long LOOP_WARMUP = 20000L;   // loop mode: same warm-up whatever ITERATIONS is
    static final long WARMUP_MIN_NS = 500000000L;  // time mode: at least 0.5 s ...
    static final int WARMUP_MIN_ROUNDS = 5;        // ... and at least 5 rounds ...
    static final long WARMUP_MAX_NS = 3000000000L; // ... but no more than 3 s (emulators)

    static long sink;  // every result is folded into it; printed to stderr at the end

    // One method per call, each a loop of its own, so that the JIT compiles each monomorphic.
    static long nanoTime(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) acc += System.nanoTime();
        return acc;
    }

    static long currentTimeMillis(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) acc += System.currentTimeMillis();
        return acc;
    }

    static long instantNow(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) {
            Instant t = Instant.now();
            acc += t.getEpochSecond() + t.getNano();
        }
        return acc;
    }

    static long threadYield(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) {
            Thread.yield();
            acc++;
        }
        return acc;
    }

    static long run(int call, long n) {
        switch (call) {
            case 0: return nanoTime(n);
            case 1: return currentTimeMillis(n);
            case 2: return instantNow(n);
            default: return threadYield(n);
        }
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String version() {
        String v = System.getProperty("java.runtime.version");
        return v != null ? v : System.getProperty("java.version");
    }

    static int usage(String why) {
        System.err.println("Timing: " + why);
        System.err.println("usage: Timing time CALL ITERATIONS ROUNDS | loop CALL ITERATIONS | calls");
        return 2;
    }

    static int main2(String[] args) {
        if (args.length == 1 && args[0].equals("calls")) {
            StringBuilder b = new StringBuilder("[");
            for (int i = 0; i < CALLS.length; i++) b.append(i > 0 ? ", " : "").append(quote(CALLS[i]));
            System.out.println(b.append(']'));
            return 0;
        }
        boolean time = args.length == 4 && args[0].equals("time");
        boolean loop = args.length == 3 && args[0].equals("loop");
        if (!time && !loop) return usage("bad arguments");
        int call = -1;
        for (int i = 0; i < CALLS.length; i++) if (CALLS[i].equals(args[1])) call = i;
        if (call < 0) return usage("unknown call " + args[1]);
        long n;
        int rounds = 0;
        try {
            n = Long.parseLong(args[2]);
            if (time) rounds = Integer.parseInt(args[3]);
        } catch (NumberFormatException e) {
            return usage("ITERATIONS and ROUNDS must be integers");
        }
        if (n < 1 || (time && rounds < 1)) return usage("ITERATIONS and ROUNDS must be >= 1");

        if (loop) {
            sink += run(call, LOOP_WARMUP);
            sink += run(call, n);
            System.out.println("{\"call\": " + quote(CALLS[call]) + ", \"iterations\": " + n + "}");
            return 0;
        }
        long warmCalls = 0, warmRounds = 0;
        long warmStart = System.nanoTime(), warmNs = 0;
        while (warmRounds < WARMUP_MIN_ROUNDS || warmNs < WARMUP_MIN_NS) {
            sink += run(call, n);
            warmCalls += n;
            warmRounds++;
            warmNs = System.nanoTime() - warmStart;
            if (warmNs >= WARMUP_MAX_NS) break;
        }
        double[] perCall = new double[rounds];
        for (int r = 0; r < rounds; r++) {
            long t0 = System.nanoTime();
            sink += run(call, n);
            long t1 = System.nanoTime();
            perCall[r] = (double) (t1 - t0) / n;
        }
        StringBuilder b = new StringBuilder("{\"call\": ").append(quote(CALLS[call]));
        b.append(", \"ns_per_call\": [");
        for (int r = 0; r < rounds; r++) {
            b.append(r > 0 ? ", " : "").append(String.format(java.util.Locale.ROOT, "%.3f", perCall[r]));
        }
        b.append("], \"iterations\": ").append(n);
        b.append(", \"warmup_calls\": ").append(warmCalls);
        b.append(", \"warmup_ns\": ").append(warmNs);
        b.append(", \"version\": ").append(quote(version())).append('}');
        System.out.println(b);
        return 0;
    }

    public static void main(String[] args) {
        int rc = main2(args);
        System.out.flush();
        System.err.println("sink " + sink);
        if (rc != 0) System.exit(rc);
    }
}
