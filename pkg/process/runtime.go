package process

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// The Go runtime's garbage collector settings, chosen by measurement (bench
// node scenario; README, "Memory on a small Pi"): a lower GOGC than Go's 100 keeps the
// idle heap of the Kubernetes components smaller for a little more CPU, and
// a soft memory limit derived from the machine's RAM makes the collector
// work harder before a small Pi runs out of memory. GOGC and GOMEMLIMIT in
// the environment win over both.
const (
	defaultGCPercent = 50
	// startupGCPercent holds while the components start: their start-up
	// allocates a lot that dies young (OpenAPI specs built and marshalled,
	// informers' first lists), and at 50 the collector took a quarter of
	// the start-up CPU. The soft memory limit still bounds the peak.
	startupGCPercent = 200
	// memLimitShare is the share of RAM the soft limit allows.
	memLimitShare = 4 // a quarter
	minMemLimit   = 192 << 20
	maxMemLimit   = 1 << 30
)

// TuneRuntime sets GOGC and the soft memory limit unless the environment
// sets them.
func TuneRuntime(log *slog.Logger) {
	gogc := os.Getenv("GOGC")
	if gogc == "" {
		debug.SetGCPercent(startupGCPercent)
		gogc = fmt.Sprintf("%d until ready, then %d", startupGCPercent, defaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if ram, err := totalRAM(); err == nil {
			debug.SetMemoryLimit(memLimitFor(ram))
		} else {
			log.Debug("no memory limit set", "err", err)
		}
	}
	// A negative limit reads the current one without changing it.
	log.Debug("Go runtime", "gogc", gogc, "memlimit-mib", debug.SetMemoryLimit(-1)>>20)
}

// memLimitFor is the soft memory limit for a machine with ram bytes.
func memLimitFor(ram uint64) int64 {
	return int64(min(max(ram/memLimitShare, minMemLimit), maxMemLimit))
}

func totalRAM() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// SettleRuntime sets the collector for a running node once start-up is
// over (GOGC 50), unless the environment sets GOGC.
func SettleRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}
