// An independent reference for the Java runtime rows (benchmarks/runtime_cost.py): shares no
// code with probes/runtimes/. Where the probe times a fixed number of calls per round, this
// loop runs for a fixed time, eight calls per iteration, and looks at the clock only every
// 1024 iterations. Built with `javac --release 8`.
//
//     java Reference CALL SECONDS REPEATS   ->  one line: median ns per call over the repeats
import java.time.Instant;
import java.util.Arrays;

public final class Reference {
    static long sink;

    private static long eight(String call) {
        long s = 0;
        switch (call) {
            case "System.nanoTime()":
                s += System.nanoTime(); s += System.nanoTime(); s += System.nanoTime(); s += System.nanoTime();
                s += System.nanoTime(); s += System.nanoTime(); s += System.nanoTime(); s += System.nanoTime();
                return s;
            case "System.currentTimeMillis()":
                s += System.currentTimeMillis(); s += System.currentTimeMillis();
                s += System.currentTimeMillis(); s += System.currentTimeMillis();
                s += System.currentTimeMillis(); s += System.currentTimeMillis();
                s += System.currentTimeMillis(); s += System.currentTimeMillis();
                return s;
            case "Instant.now()":
                for (int i = 0; i < 8; i++) s += Instant.now().getNano();
                return s;
            case "Thread.yield()":
                for (int i = 0; i < 8; i++) { Thread.yield(); s++; }
                return s;
            default:
                throw new IllegalArgumentException("unknown call " + call);
        }
    }

    private static double perCall(String call, double seconds) {
        long budget = (long) (seconds * 1e9);
        long calls = 0;
        long start = System.nanoTime();
        long elapsed;
        do {
            for (int i = 0; i < 1024; i++) sink += eight(call);
            calls += 8 * 1024;
            elapsed = System.nanoTime() - start;
        } while (elapsed < budget);
        return (double) elapsed / calls;
    }

    public static void main(String[] args) {
        String call = args[0];
        double seconds = Double.parseDouble(args[1]);
        int repeats = Integer.parseInt(args[2]);
        perCall(call, seconds);  // warm-up: the JIT compiles eight() and perCall()
        double[] results = new double[repeats];
        for (int r = 0; r < repeats; r++) results[r] = perCall(call, seconds);
        Arrays.sort(results);
        System.out.println(results[repeats / 2]);
        System.err.println("sink " + sink);
    }
}
