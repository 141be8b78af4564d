// An independent reference for the Go runtime rows (benchmarks/runtime_cost.py): Go's own
// benchmark harness (`go test -bench`), which shares no code with probes/runtimes/timing.go.
package reference

import (
	"syscall"
	"testing"
	"time"
)

var sink int64

func BenchmarkTimeNow(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += time.Now().UnixNano()
	}
}

func BenchmarkGetppid(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += int64(syscall.Getppid())
	}
}
