package aspireredis_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

const loggerChildEnv = "GOASPIRE_ASPIREREDIS_LOGGER_CHILD"

// TestGoRedisLogger runs TestGoRedisLoggerChild in a child process:
// go-redis's logger is process-wide and set once, so its test needs a
// process where nothing has set it, and no Redis client of another test
// reads it meanwhile.
func TestGoRedisLogger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoRedisLoggerChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), loggerChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestGoRedisLoggerChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestGoRedisLoggerChild: go-redis's own log lines (a failed dial here)
// stay out of the log of an App made WithoutGlobals, and reach the log of
// an App that installs the globals once it has opened a Redis client, at
// Warn with component=go-redis and without the password; when a second
// such App opens a client, they go to that App's log instead.
func TestGoRedisLoggerChild(t *testing.T) {
	if os.Getenv(loggerChildEnv) == "" {
		t.Skip("run by TestGoRedisLogger in a child process")
	}
	const secret = "LoggerPassw0rd"
	// Nothing listens there: every dial fails, and go-redis logs it.
	values := map[string]string{"ConnectionStrings:cache": freeAddr(t) + ",password=" + secret}
	const line = "failed to dial"
	dialFails := func(h servicedefaults.Host) {
		t.Helper()
		rdb, err := aspireredis.Client(context.Background(), h, "cache", func(c *cache.RedisConfig) {
			c.Options.DialerRetries, c.Options.MaxRetries = 1, -1
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Ping(context.Background()).Err(); err == nil {
			t.Fatal("Ping succeeded with nothing listening")
		}
	}
	withGlobals := func() (*servicedefaults.App, *syncbuf.Buffer) {
		t.Helper()
		var log syncbuf.Buffer
		app, err := servicedefaults.Add(context.Background(), nil,
			servicedefaults.WithLogWriter(&log),
			servicedefaults.WithConfig(discovery.FromMap(values)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
		return app, &log
	}

	quiet := servicedefaultstest.NewUnstarted(t, nil, values)
	dialFails(quiet)
	if strings.Contains(quiet.Logs.String(), line) {
		t.Errorf("WithoutGlobals: go-redis's line reached the App's log: %s", quiet.Logs.String())
	}

	first, firstLog := withGlobals()
	if strings.Contains(firstLog.String(), line) {
		t.Fatalf("go-redis's line reached the App's log before it opened a Redis client: %s", firstLog.String())
	}
	dialFails(first)
	var rec map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(firstLog.String()), "\n") {
		if strings.Contains(l, line) {
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
		}
	}
	if rec == nil {
		t.Fatalf("go-redis's line did not reach the App's log: %q", firstLog.String())
	}
	if rec["level"] != "WARN" || rec["component"] != "go-redis" {
		t.Errorf("record %v; want level WARN, component go-redis", rec)
	}
	if strings.Contains(firstLog.String(), secret) {
		t.Errorf("the App's log holds the password: %s", firstLog.String())
	}

	second, secondLog := withGlobals()
	before := strings.Count(firstLog.String(), line)
	dialFails(second)
	if !strings.Contains(secondLog.String(), line) {
		t.Errorf("go-redis's line did not reach the second App's log: %q", secondLog.String())
	}
	if after := strings.Count(firstLog.String(), line); after != before {
		t.Errorf("go-redis's line still reached the first App's log after the second opened a client")
	}
}
