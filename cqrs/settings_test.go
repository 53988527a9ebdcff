package cqrs

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

func TestResolveConnection(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		wantSource string
		wantHost   string
		wantPass   string
	}{
		{"connection string wins", map[string]string{
			"ConnectionStrings__db": "Host=cs;Password=a",
			"DB_URI":                "postgres://u:b@uri/db",
			"DB_HOST":               "prop",
		}, "ConnectionStrings:db", "cs", "a"},
		{"URI next", map[string]string{
			"DB_URI":  "postgresql://u:b@uri/db",
			"DB_HOST": "prop",
		}, "DB_URI", "uri", "b"},
		{"properties", map[string]string{
			"DB_HOST": "prop", "DB_PORT": "5433", "DB_USERNAME": "u", "DB_PASSWORD": `p;"x`, "DB_DATABASENAME": "d",
		}, "DB_HOST", "prop", `p;"x`},
		{"named settings section", map[string]string{
			"Aspire__Npgsql__db__ConnectionString": "Host=named",
			"Aspire__Npgsql__ConnectionString":     "Host=unnamed",
		}, "Aspire:Npgsql:db:ConnectionString", "named", ""},
		{"Aspire 13.6 portable alias", map[string]string{
			"ConnectionStrings__db_primary": "Host=alias;Password=a",
		}, "ConnectionStrings:db_primary", "alias", "a"},
		{"logical name before the alias", map[string]string{
			"ConnectionStrings__db-primary": "Host=logical",
			"ConnectionStrings__db_primary": "Host=alias",
		}, "ConnectionStrings:db-primary", "logical", ""},
		{"unnamed settings section", map[string]string{
			"Aspire__Npgsql__ConnectionString": "Host=unnamed",
		}, "Aspire:Npgsql:ConnectionString", "unnamed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := discovery.FromMap(tt.env)
			name := "db"
			if strings.Contains(tt.wantSource, "primary") {
				name = "db-primary"
			}
			c, source, err := resolveConnection(cfg, name, settingsLayers(cfg, name))
			if err != nil {
				t.Fatal(err)
			}
			if source != tt.wantSource || c.ConnConfig.Host != tt.wantHost || c.ConnConfig.Password != tt.wantPass {
				t.Errorf("source %q host %q password %q", source, c.ConnConfig.Host, c.ConnConfig.Password)
			}
		})
	}
}

func TestResolveConnectionErrors(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__bad": "Host=h;Password=hunter2;Port=1;Nope=1",
		"ONLY_PORT":              "5432",
	})
	_, _, err := resolveConnection(cfg, "missing", settingsLayers(cfg, "missing"))
	if !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "ConnectionStrings__missing") {
		t.Errorf("missing: %v", err)
	}
	_, _, err = resolveConnection(cfg, "my--db", settingsLayers(cfg, "my--db"))
	if !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "ConnectionStrings__my--db, ConnectionStrings__my_db") {
		t.Errorf("missing, with a portable alias: %v", err)
	}
	_, _, err = resolveConnection(cfg, "only", settingsLayers(cfg, "only"))
	if !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "ONLY_HOST") {
		t.Errorf("only port: %v", err)
	}
	_, _, err = resolveConnection(cfg, "bad", settingsLayers(cfg, "bad"))
	var ce *ConnectionError
	if !errors.As(err, &ce) || ce.Source != "ConnectionStrings:bad" || !errors.Is(err, ErrUnknownKeyword) {
		t.Fatalf("bad: %v", err)
	}
	if want := `cqrs: connection "bad" (from ConnectionStrings:bad): connection string keyword "Nope": unknown keyword`; err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}

	// A bad Aspire 13 property names the variables it came from.
	cfg = discovery.FromMap(map[string]string{"PROP_HOST": "h", "PROP_PORT": "x", "PROP_PASSWORD": "hunter2"})
	_, _, err = resolveConnection(cfg, "prop", settingsLayers(cfg, "prop"))
	if !errors.As(err, &ce) || ce.Source != "PROP_PORT" || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad property: %v", err)
	}
}

func TestPoolSettings(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Npgsql:MaxConnections":                 "50",
		"Aspire:Npgsql:db:MaxConnections":              "20",
		"Aspire:Npgsql:db:MinConnections":              "2",
		"Aspire:Npgsql:db:MinIdleConnections":          "1",
		"Aspire:Npgsql:MaxConnectionLifetime":          "00:30:00",
		"Aspire:Npgsql:db:MaxConnectionLifetimeJitter": "1m",
		"Aspire:Npgsql:db:MaxConnectionIdleTime":       "2m",
		"Aspire:Npgsql:HealthCheckPeriod":              "30s",
		"Aspire:Npgsql:db:ConnectTimeout":              "5s",
		"Aspire:Npgsql:db:ConnectRetry:MaxElapsed":     "1m",
		"Aspire:Npgsql:ConnectRetry:InitialInterval":   "100ms",
		"Aspire:Npgsql:db:ConnectRetry:WaitOnOpen":     "3s",
		"Aspire:Npgsql:DisableTracing":                 "true",
		"Aspire:Npgsql:db:DisableTracing":              "false",
		"Aspire:Npgsql:DisableMetrics":                 "true",
		"Aspire:Npgsql:db:CommandTimeout":              "00:00:45",
	})
	c, err := ParseConnectionString("Host=h;Maximum Pool Size=7")
	if err != nil {
		t.Fatal(err)
	}
	s := PoolConfig{Config: c}
	err = readPoolSettings(settingsLayers(cfg, "db"), &s)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConns != 20 || c.MinConns != 2 || c.MinIdleConns != 1 || c.MaxConnLifetime != 30*time.Minute ||
		c.MaxConnLifetimeJitter != time.Minute || c.MaxConnIdleTime != 2*time.Minute || c.HealthCheckPeriod != 30*time.Second ||
		c.ConnConfig.ConnectTimeout != 5*time.Second {
		t.Errorf("pool %d %d %d %v %v %v %v %v", c.MaxConns, c.MinConns, c.MinIdleConns, c.MaxConnLifetime,
			c.MaxConnLifetimeJitter, c.MaxConnIdleTime, c.HealthCheckPeriod, c.ConnConfig.ConnectTimeout)
	}
	s.Config = nil
	want := PoolConfig{DisableMetrics: true, ConnectRetry: ConnectRetry{InitialInterval: 100 * time.Millisecond,
		MaxElapsed: time.Minute}, WaitOnOpen: 3 * time.Second, CommandTimeout: 45 * time.Second}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("settings %+v, want %+v", s, want)
	}

	for key, val := range map[string]string{
		"Aspire:Npgsql:MaxConnections":          "0",
		"Aspire:Npgsql:MinConnections":          "200",
		"Aspire:Npgsql:MaxConnectionIdleTime":   "30",
		"Aspire:Npgsql:HealthCheckPeriod":       "0",
		"Aspire:Npgsql:DisableTracing":          "maybe",
		"Aspire:Npgsql:ConnectRetry:MaxElapsed": "-00:00:01",
		"Aspire:Npgsql:CommandTimeout":          "-1s",
	} {
		c, _ := ParseConnectionString("Host=h")
		err := readPoolSettings(settingsLayers(discovery.FromMap(map[string]string{key: val}), "db"), &PoolConfig{Config: c})
		var kerr *discovery.KeyError
		if !errors.As(err, &kerr) {
			t.Errorf("%s=%s: error %v is not a KeyError", key, val, err)
		}
	}
}

func TestDBSettings(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Npgsql:db:ReadYourWrites":           "true",
		"Aspire:Npgsql:Replicas:CheckInterval":      "500ms",
		"Aspire:Npgsql:db:Replicas:MaxLag":          "00:00:03",
		"Aspire:Npgsql:db:Replicas:MaxLagBytes":     "1048576",
		"Aspire:Npgsql:db:Replicas:CheckTimeout":    "1s",
		"Aspire:Npgsql:Replicas:ReadAttemptTimeout": "750ms",
	})
	var s Config
	if err := readDBSettings(settingsLayers(cfg, "db"), &s); err != nil {
		t.Fatal(err)
	}
	want := Config{ReadYourWrites: true, CheckInterval: 500 * time.Millisecond, CheckTimeout: time.Second, MaxLag: 3 * time.Second, MaxLagBytes: 1 << 20, ReadAttemptTimeout: 750 * time.Millisecond}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

func TestResolveNames(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantPrimary string
		wantReps    []string
	}{
		{"primary and replicas by name", map[string]string{
			"ConnectionStrings__db-primary":      "Host=p",
			"ConnectionStrings__db-replica-west": "Host=w",
			"ConnectionStrings__db-replica-east": "Host=e",
			"ConnectionStrings__other":           "Host=o",
		}, "db-primary", []string{"db-replica-east", "db-replica-west"}},
		{"plain name and Aspire 13 properties", map[string]string{
			"ConnectionStrings__db": "Host=p",
			"DB_REPLICA_EAST_URI":   "postgres://e/db",
			"DB_REPLICA2_HOST":      "r2",
			"DB_REPLICA2_PORT":      "5433",
			"DB_REPLICA_EAST_HOST":  "e",
			"DBX_REPLICA_URI":       "postgres://x/db",
		}, "db", []string{"DB_REPLICA2", "DB_REPLICA_EAST"}},
		{"explicit list", map[string]string{
			"ConnectionStrings__main":                 "Host=p",
			"Aspire__Npgsql__db__Primary":             "main",
			"Aspire__Npgsql__db__Replicas__Names__1":  "r2",
			"Aspire__Npgsql__db__Replicas__Names__0":  "r1",
			"Aspire__Npgsql__db__Replicas__Names__10": "r11",
			"ConnectionStrings__db-replica-x":         "Host=ignored",
		}, "main", []string{"r1", "r2", "r11"}},
		{"Aspire 13.6 portable aliases", map[string]string{
			"ConnectionStrings__db_primary":      "Host=p",
			"ConnectionStrings__db_replica_east": "Host=e",
			"ConnectionStrings__db-replica-west": "Host=w",
		}, "db-primary", []string{"db-replica-west", "db_replica_east"}},
		{"comma list", map[string]string{
			"ConnectionStrings__db-primary":       "Host=p",
			"Aspire__Npgsql__db__Replicas__Names": "a, b",
		}, "db-primary", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rs, err := resolveNames(discovery.FromMap(tt.env), "db")
			if err != nil {
				t.Fatal(err)
			}
			if p != tt.wantPrimary || !reflect.DeepEqual(rs, tt.wantReps) {
				t.Errorf("got %q %q, want %q %q", p, rs, tt.wantPrimary, tt.wantReps)
			}
		})
	}
	_, _, err := resolveNames(discovery.FromMap(nil), "db")
	if !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("no primary: %v", err)
	}
}

// TestNewDefaults opens a hand-built Config, without discovery: its zero
// fields take the defaults, and the settings LoadConfig reads mean what
// they meant (Replicas:MaxLag=0 is no bound).
func TestNewDefaults(t *testing.T) {
	pc, err := ParseConnectionString("Host=127.0.0.1;Port=1")
	if err != nil {
		t.Fatal(err)
	}
	db, err := New(t.Context(), &Config{Primary: PoolConfig{Config: pc}, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := dbSettings{checkInterval: DefaultCheckInterval, checkTimeout: DefaultCheckInterval, maxLag: DefaultMaxLag, readAttempt: DefaultReadAttemptTimeout}
	if db.settings != want || db.Name() != "postgres" || db.primary.name != "postgres" {
		t.Errorf("settings %+v name %q/%q, want %+v and postgres", db.settings, db.Name(), db.primary.name, want)
	}
	r := db.primary.pool.settings.ConnectRetry
	if r.InitialInterval != DefaultRetryInitial || r.MaxInterval != DefaultRetryMax {
		t.Errorf("connect retry %+v, want the defaults", r)
	}

	c, err := LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings__db":                            "Host=127.0.0.1;Port=1",
		"Aspire__Npgsql__db__Replicas__MaxLag":             "0",
		"Aspire__Npgsql__db__Replicas__ReadAttemptTimeout": "0",
	}), "db")
	if err != nil {
		t.Fatal(err)
	}
	c.Logger = quietLogger
	db2, err := New(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if db2.settings.maxLag != 0 || db2.settings.readAttempt != 0 || db2.Name() != "db" {
		t.Errorf("Replicas:MaxLag=0 and ReadAttemptTimeout=0 gave %v and %v (want 0, no bound), name %q", db2.settings.maxLag, db2.settings.readAttempt, db2.Name())
	}

	for _, bad := range []*Config{nil, {}, {Primary: PoolConfig{Config: pc}, CheckInterval: -time.Second}} {
		if db, err := New(t.Context(), bad); err == nil {
			db.Close()
			t.Errorf("New(%+v) succeeded", bad)
		}
	}
}

// TestCommandTimeout covers where a pool's command timeout comes from: the
// CommandTimeout setting, else the connection string's Command Timeout
// (0 there: none), else the default.
func TestCommandTimeout(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want time.Duration
	}{
		{"default", map[string]string{"ConnectionStrings__db": "Host=127.0.0.1;Port=1"}, DefaultCommandTimeout},
		{"keyword", map[string]string{"ConnectionStrings__db": "Host=127.0.0.1;Port=1;Command Timeout=7"}, 7 * time.Second},
		{"keyword 0: none", map[string]string{"ConnectionStrings__db": "Host=127.0.0.1;Port=1;CommandTimeout=0"}, 0},
		{"setting wins", map[string]string{"ConnectionStrings__db": "Host=127.0.0.1;Port=1;Command Timeout=7",
			"Aspire__Npgsql__db__CommandTimeout": "00:00:03"}, 3 * time.Second},
		{"setting 0: none", map[string]string{"ConnectionStrings__db": "Host=127.0.0.1;Port=1",
			"Aspire__Npgsql__CommandTimeout": "0"}, 0},
		{"URL statement_timeout", map[string]string{"ConnectionStrings__db": "postgres://127.0.0.1:1/db?statement_timeout=2500"}, 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := openPool(t.Context(), discovery.FromMap(tt.env), "db")
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.commandTimeout != tt.want {
				t.Errorf("command timeout %v, want %v", p.commandTimeout, tt.want)
			}
		})
	}
}
