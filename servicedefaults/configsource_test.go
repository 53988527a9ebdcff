package servicedefaults_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestWithConfigSource checks that a source's values reach the App's own
// settings, that a source failing at Add fails Add naming it, and that
// the App reloads a reloading source until Shutdown (goleak, in
// TestMain, finds a watcher left running).
func TestWithConfigSource(t *testing.T) {
	var loads atomic.Int32
	src := discovery.Source{
		Name:           "store",
		Secret:         true,
		ReloadInterval: time.Millisecond,
		Load: func(_ context.Context, cfg *discovery.Config) (map[string]string, error) {
			loads.Add(1)
			return map[string]string{
				"Aspire:ServiceDefaults:ShutdownTimeout": "00:00:07",
				"Seen":                                   cfg.String("FromEnv"),
			}, nil
		},
	}
	app, _ := newApp(t, map[string]string{"FromEnv": "x"}, nil, servicedefaults.WithConfigSource(src))
	if got := app.Config().String("Aspire:ServiceDefaults:ShutdownTimeout"); got != "00:00:07" {
		t.Errorf("ShutdownTimeout from the source = %q", got)
	}
	if got := app.Config().String("Seen"); got != "x" {
		t.Errorf("the source saw FromEnv = %q", got)
	}
	waitFor(t, "the App to reload the source", func() bool { return loads.Load() >= 3 })
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := loads.Load()
	time.Sleep(20 * time.Millisecond)
	if loads.Load() != after {
		t.Errorf("the source is still reloaded after Shutdown (%d loads after %d)", loads.Load(), after)
	}

	bad := discovery.Source{Name: "broken store", Load: func(context.Context, *discovery.Config) (map[string]string, error) {
		return nil, errors.New("unreachable")
	}}
	_, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithConfig(discovery.FromMap(nil)),
		servicedefaults.WithoutGlobals(), servicedefaults.WithConfigSource(bad))
	var se *discovery.SourceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "broken store") {
		t.Errorf("Add with a failing source: %v; want a SourceError naming it", err)
	}
}
