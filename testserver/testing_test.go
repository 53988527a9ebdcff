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

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
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

	missingBasebackup := fmt.Errorf("start: %w", &BinaryNotFoundError{Name: "pg_basebackup"})
	tests := []struct {
		name     string
		ci       string // the CI variable
		start    func(testing.TB)
		skipWith string // "" means the test must fail instead
		failWith string
	}{
		{"postgres missing", "", func(tb testing.TB) { NewPostgres(tb) }, "postgres not installed", ""},
		{"redis-server missing", "", func(tb testing.TB) { NewRedis(tb) }, "redis-server not installed", ""},
		{"wrapped missing binary", "", func(tb testing.TB) { skipOrFatal(tb, missingBasebackup) }, "pg_basebackup not installed", ""},
		{"CI=false is not CI", "false", func(tb testing.TB) { NewRedis(tb) }, "redis-server not installed", ""},
		{"redis-cli missing", "", func(tb testing.TB) { NewRedisCluster(tb, 3) }, "redis-cli not installed", ""},
		{"sentinel of a stopped server", "", func(tb testing.TB) { (&Redis{}).NewSentinel(tb, "m") }, "", "primary is not running"},
		{"replica of a stopped server", "", func(tb testing.TB) { (&Redis{}).NewReplica(tb) }, "", "primary is not running"},
		{"other error", "", func(tb testing.TB) { skipOrFatal(tb, errors.New("initdb: exit status 1")) }, "", "exit status 1"},
		// Under CI a missing binary fails the run instead of skipping.
		{"postgres missing in CI", "true", func(tb testing.TB) { NewPostgres(tb) }, "", "postgres not installed, and CI is set"},
		{"replica tool missing in CI", "1", func(tb testing.TB) { skipOrFatal(tb, missingBasebackup) }, "", "pg_basebackup not installed, and CI is set"},
		{"redis-server missing in CI", "true", func(tb testing.TB) { NewRedis(tb) }, "", "redis-server not installed, and CI is set"},
		{"redis-cli missing in CI", "true", func(tb testing.TB) { NewRedisCluster(tb, 3) }, "", "redis-cli not installed, and CI is set"},
		{"SkipIfMissing in CI", "true", func(tb testing.TB) { SkipIfMissing(tb, missingBasebackup) }, "", "CI is set"},
		{"SkipIfMissing leaves other errors", "true", func(tb testing.TB) {
			SkipIfMissing(tb, errors.New("other"))
			SkipIfMissing(tb, nil)
			tb.Fatal("returned")
		}, "", "returned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			f := &fakeTB{TB: t}
			f.call(func() { tt.start(f) })
			if tt.skipWith != "" {
				if !strings.Contains(f.skipped, tt.skipWith) || f.failed != "" {
					t.Errorf("skipped %q, failed %q; want a skip saying %q", f.skipped, f.failed, tt.skipWith)
				}
				return
			}
			if !strings.Contains(f.failed, tt.failWith) || f.failed == "" || f.skipped != "" {
				t.Errorf("skipped %q, failed %q; want a failure saying %q", f.skipped, f.failed, tt.failWith)
			}
		})
	}
}
