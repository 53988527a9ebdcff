package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

// store is a Source backed by a map the test changes between reloads.
type store struct {
	mu     sync.Mutex
	values map[string]string
	err    error
	loads  atomic.Int32
}

func (s *store) set(values map[string]string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values, s.err = values, err
}

func (s *store) source(name string, secret bool, every time.Duration) discovery.Source {
	return discovery.Source{
		Name:           name,
		Secret:         secret,
		ReloadInterval: every,
		Load: func(ctx context.Context, _ *discovery.Config) (map[string]string, error) {
			s.loads.Add(1)
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.err != nil {
				return nil, s.err
			}
			out := make(map[string]string, len(s.values))
			for k, v := range s.values {
				out[k] = v
			}
			return out, nil
		},
	}
}

// TestSourceLayering checks where a source sits: above appsettings files
// and key-per-file directories, below environment variables and
// WithValues; a later source above an earlier one.
func TestSourceLayering(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]string{"InFileAndDir": "dir", "InDirAndSource": "dir"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fsys := fstest.MapFS{"appsettings.json": {Data: []byte(`{
		"OnlyFile": "file", "InFileAndDir": "file", "InFileAndSource": "file",
		"ApiKeys": {"External": "file"}}`)}}
	cfg, err := discovery.Load(discovery.WithFS(fsys), discovery.WithKeyPerFile(dir),
		discovery.WithEnviron([]string{"InSourceAndEnv=env", "InBothSources=env-loses-not"}),
		discovery.WithValues(map[string]string{"InSourceAndValues": "values"}))
	if err != nil {
		t.Fatal(err)
	}
	first := &store{values: map[string]string{
		"ApiKeys:External": "vault", "InFileAndSource": "vault", "InDirAndSource": "vault",
		"InSourceAndEnv": "vault", "InSourceAndValues": "vault", "InTwoSources": "first",
		"Only__Source": "vault",
	}}
	second := &store{values: map[string]string{"InTwoSources": "second"}}
	ctx := context.Background()
	withFirst, err := cfg.AddSource(ctx, first.source("first", true, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, err := withFirst.AddSource(ctx, second.source("second", false, 0))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"OnlyFile", "file"},
		{"InFileAndDir", "dir"},
		{"InFileAndSource", "vault"},    // source over appsettings
		{"ApiKeys:External", "vault"},   // nested key
		{"InDirAndSource", "vault"},     // source over key-per-file
		{"InSourceAndEnv", "env"},       // environment over source
		{"InSourceAndValues", "values"}, // WithValues over source
		{"InTwoSources", "second"},      // later source over earlier
		{"Only:Source", "vault"},        // "__" read as ':'
	}
	for _, tt := range tests {
		if v, ok := got.Lookup(tt.key); !ok || v != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.key, v, ok, tt.want)
		}
	}
	if _, ok := cfg.Lookup("Only:Source"); ok {
		t.Error("AddSource changed the Config it was called on")
	}
	if names := got.Sources(); fmt.Sprint(names) != "[first second]" {
		t.Errorf("Sources() = %v", names)
	}
	if !got.IsSecret("ApiKeys:External") || got.IsSecret("OnlyFile") || got.IsSecret("InTwoSources") == false {
		// InTwoSources is set by the secret source too: still a secret.
		t.Errorf("IsSecret: ApiKeys:External=%v OnlyFile=%v InTwoSources=%v",
			got.IsSecret("ApiKeys:External"), got.IsSecret("OnlyFile"), got.IsSecret("InTwoSources"))
	}
}

// TestSourceLoadSeesConfiguration checks that a source reads the layers
// it needs (a vault URI from a connection string set in the environment).
func TestSourceLoadSeesConfiguration(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{"ConnectionStrings__secrets": "https://v.example/"})
	var seen string
	src := discovery.Source{Name: "vault", Load: func(_ context.Context, c *discovery.Config) (map[string]string, error) {
		seen, _ = c.ConnectionString("secrets")
		return nil, nil
	}}
	if _, err := cfg.Section("Some").AddSource(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if seen != "https://v.example/" {
		t.Errorf("Load saw ConnectionStrings:secrets = %q", seen)
	}
}

func TestAddSourceErrors(t *testing.T) {
	cfg := discovery.FromMap(nil)
	boom := errors.New("vault unreachable")
	tests := []struct {
		name string
		src  discovery.Source
		want string
	}{
		{"no Load", discovery.Source{Name: "s"}, "no Load function"},
		{"negative interval", discovery.Source{Name: "s", ReloadInterval: -1, Load: (&store{}).source("", false, 0).Load}, "negative ReloadInterval"},
		{"load fails", (&store{err: boom}).source("s", true, 0), "vault unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cfg.AddSource(context.Background(), tt.src)
			var se *discovery.SourceError
			if !errors.As(err, &se) || se.Source != "s" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("AddSource error = %v; want a *SourceError naming s with %q", err, tt.want)
			}
		})
	}
}

// TestReloadSwapsEveryView checks that a reload reaches sections taken
// before it, that a removed key disappears, and that a failed reload keeps
// the previous values.
func TestReloadSwapsEveryView(t *testing.T) {
	s := &store{values: map[string]string{"ApiKeys:External": "v1", "ApiKeys:Old": "gone-soon"}}
	ctx := context.Background()
	cfg, err := discovery.FromMap(map[string]string{"Other": "x"}).AddSource(ctx, s.source("vault", true, 0))
	if err != nil {
		t.Fatal(err)
	}
	sec := cfg.Section("ApiKeys")
	s.set(map[string]string{"ApiKeys:External": "v2", "ApiKeys:New": "n"}, nil)
	if err := cfg.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sec.String("External"); v != "v2" {
		t.Errorf("section after reload: External = %q, want v2", v)
	}
	if _, ok := sec.Lookup("Old"); ok {
		t.Error("a key removed from the source is still there")
	}
	if got := fmt.Sprint(sec.Children()); got != "[External New]" {
		t.Errorf("Children = %s", got)
	}
	s.set(nil, errors.New("vault down"))
	err = cfg.Reload(ctx)
	var se *discovery.SourceError
	if !errors.As(err, &se) || se.Source != "vault" {
		t.Fatalf("Reload error = %v; want a *SourceError", err)
	}
	if v := cfg.String("ApiKeys:External"); v != "v2" || cfg.String("Other") != "x" {
		t.Errorf("after a failed reload: External = %q; want the last good value v2", v)
	}
}

// TestReloadWhileReading reads through sections while a source is
// reloaded (run with -race): every read sees a whole state, and a reader
// never goes back to an older one.
func TestReloadWhileReading(t *testing.T) {
	s := &store{values: map[string]string{"S:A": "0"}}
	ctx := context.Background()
	cfg, err := discovery.FromMap(nil).AddSource(ctx, s.source("s", false, 0))
	if err != nil {
		t.Fatal(err)
	}
	var (
		started, wg sync.WaitGroup
		bad, reads  atomic.Int32
		done        = make(chan struct{})
	)
	for range 2 {
		started.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sec := cfg.Section("S") // taken before the reloads
			last := "0"
			for first := true; ; first = false {
				a := sec.String("A")
				reads.Add(1)
				if len(a) != 1 || a < last {
					bad.Add(1)
				}
				last = a
				if first {
					started.Done()
				}
				select {
				case <-done: // after the last reload: its value
					if a := sec.String("A"); a != "9" {
						t.Errorf("a reader read %q after the last reload; want 9", a)
					}
					return
				default:
				}
			}
		}()
	}
	started.Wait() // both read before the first reload
	for i := 1; i <= 9; i++ {
		s.set(map[string]string{"S:A": fmt.Sprint(i)}, nil)
		if err := cfg.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d of %d reads saw a missing or older value", bad.Load(), reads.Load())
	}
	if got := cfg.String("S:A"); got != "9" {
		t.Errorf("S:A = %q; want 9", got)
	}
	if got := cfg.Section("").String("S:A"); got != "9" {
		t.Errorf("Section(\"\").S:A = %q; want 9, the root's", got)
	}
}

// TestSecretSourceMasked checks that no error or print of the
// configuration shows a value a Secret source set, whatever its key.
func TestSecretSourceMasked(t *testing.T) {
	const secret = "sEcReT-value-42"
	s := &store{values: map[string]string{"Limits:Count": secret, "Limits:Wait": secret, "Limits:On": secret, "Limits:Ratio": secret}}
	cfg, err := discovery.FromMap(nil).AddSource(context.Background(), s.source("vault", true, 0))
	if err != nil {
		t.Fatal(err)
	}
	sec := cfg.Section("Limits")
	_, e1 := sec.Int("Count", 0)
	_, e2 := sec.Duration("Wait", 0)
	_, e3 := sec.Bool("On", false)
	_, e4 := sec.Float("Ratio", 0)
	for i, err := range []error{e1, e2, e3, e4} {
		var ke *discovery.KeyError
		if !errors.As(err, &ke) {
			t.Fatalf("getter %d: error %v is not a *KeyError", i, err)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), secret) {
			t.Errorf("getter %d: error shows the secret: %v", i, err)
		}
		if !strings.Contains(err.Error(), `"***"`) {
			t.Errorf("getter %d: error %v does not mask the value", i, err)
		}
	}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", sec)} {
		if strings.Contains(out, secret) {
			t.Errorf("printing the Config shows the secret: %s", out)
		}
	}
	// The same values from a source not marked Secret are quoted.
	plain, _ := discovery.FromMap(nil).AddSource(context.Background(), s.source("plain", false, 0))
	if _, err := plain.Int("Limits:Count", 0); err == nil || !strings.Contains(err.Error(), secret) {
		t.Errorf("non-secret source: error %v should quote the value", err)
	}
}

// TestWatch checks that Watch reloads on the interval, reports a source
// that stays down once, and returns when its context ends.
func TestWatch(t *testing.T) {
	s := &store{values: map[string]string{"K": "v1"}}
	cfg, err := discovery.FromMap(nil).AddSource(context.Background(), s.source("vault", true, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var reported []error
	done := make(chan error, 1)
	go func() {
		done <- cfg.Watch(ctx, func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() })
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	s.set(map[string]string{"K": "v2"}, nil)
	waitFor("the reload of v2", func() bool { return cfg.String("K") == "v2" })

	s.set(nil, errors.New("vault down"))
	before := s.loads.Load()
	waitFor("three failed reloads", func() bool { return s.loads.Load() >= before+3 })
	mu.Lock()
	n := len(reported)
	mu.Unlock()
	if n != 1 {
		t.Errorf("a source failing 3 times in a row was reported %d times; want 1", n)
	}
	if cfg.String("K") != "v2" {
		t.Errorf("K = %q after failed reloads; want the last good v2", cfg.String("K"))
	}
	s.set(map[string]string{"K": "v3"}, nil)
	waitFor("the reload of v3", func() bool { return cfg.String("K") == "v3" })
	s.set(nil, errors.New("down again"))
	waitFor("a second failure reported", func() bool { mu.Lock(); defer mu.Unlock(); return len(reported) == 2 })

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v; want context.Canceled", err)
	}
	if err := discovery.FromMap(nil).Watch(context.Background(), nil); err != nil {
		t.Errorf("Watch without reloading sources = %v; want nil at once", err)
	}
}
