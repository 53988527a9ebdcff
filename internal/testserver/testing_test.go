package testserver

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records what a wrapper does to its test. Like the real methods,
// Skipf and Fatal end the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

// call runs fn as a test body would run, in its own goroutine.
func (f *fakeTB) call(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func TestWrappersSkipOnlyForMissingBinaries(t *testing.T) {
	// No parallel: this swaps PATH and postgresLibDir.
	t.Setenv("PATH", t.TempDir())
	saved := postgresLibDir
	postgresLibDir = t.TempDir()
	defer func() { postgresLibDir = saved }()

	tests := []struct {
		name     string
		start    func(testing.TB)
		skipWith string // "" means the test must fail instead
	}{
		{"postgres missing", func(tb testing.TB) { NewPostgres(tb) }, "postgres not installed"},
		{"redis-server missing", func(tb testing.TB) { NewRedis(tb) }, "redis-server not installed"},
		{"wrapped missing binary", func(tb testing.TB) {
			skipOrFatal(tb, fmt.Errorf("start: %w", &BinaryNotFoundError{Name: "pg_basebackup"}))
		}, "pg_basebackup not installed"},
		{"other error", func(tb testing.TB) { skipOrFatal(tb, errors.New("initdb: exit status 1")) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTB{TB: t}
			f.call(func() { tt.start(f) })
			if tt.skipWith != "" {
				if !strings.Contains(f.skipped, tt.skipWith) || f.failed != "" {
					t.Errorf("skipped %q, failed %q; want a skip saying %q", f.skipped, f.failed, tt.skipWith)
				}
				return
			}
			if f.failed == "" || f.skipped != "" {
				t.Errorf("skipped %q, failed %q; want a failure", f.skipped, f.failed)
			}
		})
	}
}
