package servicedefaults

import (
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/cgroupmem"
)

// MemoryLimitKey sets the Go memory limit Add derives from the
// container's: a percentage of the tightest cgroup memory limit ("90%",
// the default, or "90"), or "off" to leave the limit alone.
//
// Go sizes GOMAXPROCS from the container's CPU limit (since Go 1.25) but
// not its soft memory limit, so a service near its container's memory
// limit is OOM-killed before the garbage collector works harder. When the
// process runs in a cgroup with a memory limit (cgroup v2 memory.max, v1
// memory.limit_in_bytes, the tightest of the process's cgroup and its
// ancestors) and no limit was set otherwise, Add calls
// debug.SetMemoryLimit with that percentage of it, and logs what it chose
// once. A GOMEMLIMIT variable (including GOMEMLIMIT=off) or a limit the
// program set before Add is left as it is.
//
// The memory limit is process-wide state: like the OpenTelemetry globals,
// Add leaves it alone under WithoutGlobals.
const MemoryLimitKey = "Aspire:ServiceDefaults:MemoryLimit"

// defaultMemoryPercent is the share of the container's limit the Go
// runtime's soft limit gets: the rest is for memory the runtime does not
// count (stacks of cgo threads, the binary, the page cache charged to the
// cgroup).
const defaultMemoryPercent = 90

var errMemoryLimit = errors.New(`must be "off" or a percentage of the container's memory limit, such as "90%"`)

// readMemoryLimitSettings validates MemoryLimitKey when Add reads its
// settings.
func readMemoryLimitSettings(cfg *discovery.Config) error {
	_, _, err := memoryPercent(cfg)
	return err
}

// memoryPercent reads MemoryLimitKey: off, or the percentage.
func memoryPercent(cfg *discovery.Config) (percent float64, off bool, err error) {
	v := strings.TrimSpace(cfg.String(MemoryLimitKey))
	switch strings.ToLower(v) {
	case "":
		return defaultMemoryPercent, false, nil
	case "off", "false", "none":
		return 0, true, nil
	}
	p, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(v, "%")), 64)
	if err != nil || math.IsNaN(p) || p <= 0 || p > 100 {
		return 0, false, &discovery.KeyError{Key: MemoryLimitKey, Err: errMemoryLimit}
	}
	return p, false, nil
}

// memoryLimitChoice is what Add does about the Go memory limit.
type memoryLimitChoice struct {
	set   bool  // call debug.SetMemoryLimit(limit)
	limit int64 // the limit to set
	level slog.Level
	msg   string
	args  []any
}

// chooseMemoryLimit decides the Go memory limit from the configuration,
// the limit in effect (current, math.MaxInt64 when none) and the cgroup
// files below root.
func chooseMemoryLimit(cfg *discovery.Config, current int64, root fs.FS) memoryLimitChoice {
	percent, off, err := memoryPercent(cfg)
	switch {
	case err != nil: // Add validated it already
		return memoryLimitChoice{level: slog.LevelWarn, msg: "memory limit left alone", args: []any{"error", err}}
	case off:
		return memoryLimitChoice{level: slog.LevelDebug, msg: "memory limit left alone: " + MemoryLimitKey + " is off"}
	}
	if v, ok := cfg.Lookup("GOMEMLIMIT"); ok && strings.TrimSpace(v) != "" {
		return memoryLimitChoice{level: slog.LevelInfo, msg: "memory limit left to GOMEMLIMIT", args: []any{"GOMEMLIMIT", v}}
	}
	if current != math.MaxInt64 {
		return memoryLimitChoice{level: slog.LevelInfo, msg: "memory limit already set; left alone", args: []any{"limit_bytes", current}}
	}
	limit, source, ok, err := cgroupmem.Limit(root)
	if err != nil {
		return memoryLimitChoice{level: slog.LevelWarn, msg: "memory limit left alone: cannot read the container's", args: []any{"error", err}}
	}
	if !ok {
		return memoryLimitChoice{level: slog.LevelDebug, msg: "memory limit left alone: no container memory limit"}
	}
	soft := int64(float64(limit) * percent / 100)
	return memoryLimitChoice{set: true, limit: soft, level: slog.LevelInfo,
		msg:  "memory limit set from the container's",
		args: []any{"limit_bytes", soft, "container_limit_bytes", limit, "percent", percent, "source", "/" + source}}
}

// applyMemoryLimit sets the Go memory limit from the container's (see
// MemoryLimitKey) and logs what it chose. Add calls it with the globals.
func (a *App) applyMemoryLimit() {
	c := chooseMemoryLimit(a.cfg, debug.SetMemoryLimit(-1), os.DirFS("/"))
	if c.set {
		debug.SetMemoryLimit(c.limit)
	}
	a.logger.Log(a.opening, c.level, c.msg, c.args...)
}
