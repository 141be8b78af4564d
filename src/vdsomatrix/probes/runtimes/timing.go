// vdsomatrix: how fast, and through which door, Go reads its clock.
// The runtimes contract's command line (the same for every runtime program):
//
//	timing-go-* time CALL ITERATIONS ROUNDS   one JSON line: ns per call of each round
//	timing-go-* loop CALL ITERATIONS          fixed warm-up, then ITERATIONS calls
//	timing-go-* calls                         the CALL ids, as a JSON list
//
// One source, built twice by build.sh: static (CGO_ENABLED=0) and dynamic (cgo, external link,
// libc loaded); the version string says which, read from the process's own mappings.
// Go 1.15+, standard library only, no module needed.
package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var calls = []string{"time.Now()", "syscall.Getppid()"}

const (
	loopWarmup      = 20000      // loop mode: the same warm-up whatever ITERATIONS is
	warmupMinNs     = 500000000  // time mode: at least 0.5 s ...
	warmupMinRounds = 5          // ... and at least 5 rounds ...
	warmupMaxNs     = 3000000000 // ... but no more than 3 s (emulators)
)

var sink int64 // every result is folded into it; printed to stderr at the end

//go:noinline
func timeNow(n int64) int64 {
	var acc int64
	for i := int64(0); i < n; i++ {
		acc += time.Now().UnixNano()
	}
	return acc
}

//go:noinline
func getppid(n int64) int64 {
	var acc int64
	for i := int64(0); i < n; i++ {
		acc += int64(syscall.Getppid())
	}
	return acc
}

func run(call string, n int64) int64 {
	if call == "time.Now()" {
		return timeNow(n)
	}
	return getppid(n)
}

// linkage: "dynamic" when a dynamic loader is mapped into this process, else "static".
func linkage() string {
	maps, err := ioutil.ReadFile("/proc/self/maps")
	if err != nil {
		return "unknown-linkage"
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.Contains(line, "/ld-linux") || strings.Contains(line, "/ld-musl") ||
			strings.Contains(line, "/libc.so") || strings.Contains(line, "/libc-") {
			return "dynamic"
		}
	}
	return "static"
}

func usage(why string) int {
	fmt.Fprintf(os.Stderr, "timing-go: %s\nusage: timing-go time CALL ITERATIONS ROUNDS | loop CALL ITERATIONS | calls\n", why)
	return 2
}

func realMain(args []string) int {
	if len(args) == 1 && args[0] == "calls" {
		out, _ := json.Marshal(calls)
		fmt.Println(string(out))
		return 0
	}
	timed := len(args) == 4 && args[0] == "time"
	if !timed && !(len(args) == 3 && args[0] == "loop") {
		return usage("bad arguments")
	}
	known := false
	for _, c := range calls {
		known = known || c == args[1]
	}
	if !known {
		return usage("unknown call " + args[1])
	}
	n, err := strconv.ParseInt(args[2], 10, 64)
	rounds := int64(1)
	if err == nil && timed {
		rounds, err = strconv.ParseInt(args[3], 10, 64)
	}
	if err != nil || n < 1 || rounds < 1 {
		return usage("ITERATIONS and ROUNDS must be integers >= 1")
	}
	if !timed {
		sink += run(args[1], loopWarmup)
		sink += run(args[1], n)
		out, _ := json.Marshal(map[string]interface{}{"call": args[1], "iterations": n})
		fmt.Println(string(out))
		return 0
	}
	var warmCalls, warmRounds int64
	var warmNs time.Duration
	start := time.Now() // monotonic reading: time.Since uses the monotonic clock
	for warmRounds < warmupMinRounds || warmNs < warmupMinNs {
		sink += run(args[1], n)
		warmCalls += n
		warmRounds++
		warmNs = time.Since(start)
		if warmNs >= warmupMaxNs {
			break
		}
	}
	perCall := make([]float64, 0, rounds)
	for r := int64(0); r < rounds; r++ {
		t0 := time.Now()
		sink += run(args[1], n)
		d := time.Since(t0)
		v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(d.Nanoseconds())/float64(n), 'f', 3, 64), 64)
		perCall = append(perCall, v)
	}
	out, _ := json.Marshal(map[string]interface{}{
		"call": args[1], "ns_per_call": perCall, "iterations": n, "warmup_calls": warmCalls,
		"warmup_ns": warmNs.Nanoseconds(), "version": runtime.Version() + " " + linkage(),
	})
	fmt.Println(string(out))
	return 0
}

func main() {
	rc := realMain(os.Args[1:])
	fmt.Fprintf(os.Stderr, "sink %d\n", sink)
	os.Exit(rc)
}
