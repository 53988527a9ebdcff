package servicedefaults_test

import (
	"context"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
)

func TestMemoryLimitAtAdd(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	installSentinels(t) // Add replaces the OTel globals and slog's default

	// With the globals, Add decides and logs once; GOMEMLIMIT wins.
	var logs syncbuf.Buffer
	app, err := servicedefaults.Add(context.Background(), nil,
		servicedefaults.WithConfig(discovery.FromMap(map[string]string{"GOMEMLIMIT": "off", "DOTNET_ENVIRONMENT": "Development"})),
		servicedefaults.WithLogWriter(&logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Shutdown(context.Background()) })
	if n := strings.Count(logs.String(), "memory limit left to GOMEMLIMIT"); n != 1 {
		t.Errorf("%d records about the memory limit, want 1:\n%s", n, logs.String())
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("memory limit changed from %d to %d despite GOMEMLIMIT=off", before, got)
	}

	// Without the globals, Add leaves it alone and says nothing.
	var quiet syncbuf.Buffer
	app2, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithoutGlobals(),
		servicedefaults.WithConfig(discovery.FromMap(map[string]string{"DOTNET_ENVIRONMENT": "Development", "GOMEMLIMIT": "off"})),
		servicedefaults.WithLogWriter(&quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app2.Shutdown(context.Background()) })
	if strings.Contains(quiet.String(), "memory limit") {
		t.Errorf("WithoutGlobals: the App logged about the memory limit:\n%s", quiet.String())
	}

	// A bad setting fails Add, naming the key.
	_, err = servicedefaults.Add(context.Background(), nil, servicedefaults.WithoutGlobals(),
		servicedefaults.WithConfig(discovery.FromMap(map[string]string{servicedefaults.MemoryLimitKey: "lots"})))
	if err == nil || !strings.Contains(err.Error(), servicedefaults.MemoryLimitKey) {
		t.Errorf("Add with %s=lots: err = %v", servicedefaults.MemoryLimitKey, err)
	}
}
