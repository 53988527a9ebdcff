package servicedefaults

import (
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/goaspire/goaspire/discovery"
)

func TestChooseMemoryLimit(t *testing.T) {
	v2 := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("1000000000\n")},
	}
	none := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("max\n")},
	}
	bad := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("lots\n")},
	}
	tests := []struct {
		name    string
		values  map[string]string
		current int64
		root    fstest.MapFS
		set     bool
		limit   int64
		level   slog.Level
		msg     string
	}{
		{"90% of the cgroup", nil, math.MaxInt64, v2, true, 900000000, slog.LevelInfo, "set from the container's"},
		{"configured percentage", map[string]string{MemoryLimitKey: "75%"}, math.MaxInt64, v2, true, 750000000, slog.LevelInfo, "set from"},
		{"percentage without %", map[string]string{MemoryLimitKey: "50"}, math.MaxInt64, v2, true, 500000000, slog.LevelInfo, "set from"},
		{"off", map[string]string{MemoryLimitKey: "off"}, math.MaxInt64, v2, false, 0, slog.LevelDebug, "is off"},
		{"GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "512MiB"}, 512 << 20, v2, false, 0, slog.LevelInfo, "left to GOMEMLIMIT"},
		{"GOMEMLIMIT=off", map[string]string{"GOMEMLIMIT": "off"}, math.MaxInt64, v2, false, 0, slog.LevelInfo, "left to GOMEMLIMIT"},
		{"set in code before Add", nil, 1 << 30, v2, false, 0, slog.LevelInfo, "already set"},
		{"no cgroup limit", nil, math.MaxInt64, none, false, 0, slog.LevelDebug, "no container memory limit"},
		{"no cgroup", nil, math.MaxInt64, fstest.MapFS{}, false, 0, slog.LevelDebug, "no container memory limit"},
		{"unreadable cgroup", nil, math.MaxInt64, bad, false, 0, slog.LevelWarn, "cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := chooseMemoryLimit(discovery.FromMap(tt.values), tt.current, tt.root)
			if c.set != tt.set || c.limit != tt.limit || c.level != tt.level || !strings.Contains(c.msg, tt.msg) {
				t.Errorf("chooseMemoryLimit = %+v; want set %v, limit %d, level %v, message with %q", c, tt.set, tt.limit, tt.level, tt.msg)
			}
		})
	}
}

func TestMemoryLimitSetting(t *testing.T) {
	for _, v := range []string{"", "off", "OFF", "false", "90%", "90", "12.5%", "100"} {
		if err := readMemoryLimitSettings(discovery.FromMap(map[string]string{MemoryLimitKey: v})); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"0", "101%", "-5", "lots", "NaN", "1GiB"} {
		err := readMemoryLimitSettings(discovery.FromMap(map[string]string{MemoryLimitKey: v}))
		if err == nil || !strings.Contains(err.Error(), MemoryLimitKey) {
			t.Errorf("%q: err = %v, want one naming %s", v, err, MemoryLimitKey)
		}
	}
}
