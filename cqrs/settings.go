package cqrs

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/connstr"
)

// SettingsSection is the configuration section cqrs reads, as Aspire.Npgsql
// does. Settings in "Aspire:Npgsql:{name}" override those in
// "Aspire:Npgsql".
const SettingsSection = "Aspire:Npgsql"

// ConnectionError reports a connection that could not be configured. It
// names the connection and where its settings came from, never a secret.
type ConnectionError struct {
	// Name is the connection name ("db-primary").
	Name string
	// Source is the configuration key or variable the connection string
	// came from ("ConnectionStrings:db-primary", "DB_PRIMARY_URI", ...),
	// empty when none was found.
	Source string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *ConnectionError) Error() string {
	msg := strings.TrimPrefix(e.Err.Error(), "cqrs: ")
	if e.Source == "" {
		return fmt.Sprintf("cqrs: connection %q: %s", e.Name, msg)
	}
	return fmt.Sprintf("cqrs: connection %q (from %s): %s", e.Name, e.Source, msg)
}

// Unwrap returns a *discovery.KeyError naming Source, wrapping Err, so
// that errors.As finds the key at fault as for every other configuration
// error; Err itself when it is a KeyError already or Source is empty.
func (e *ConnectionError) Unwrap() error {
	var ke *discovery.KeyError
	if e.Source == "" || errors.As(e.Err, &ke) {
		return e.Err
	}
	return &discovery.KeyError{Key: e.Source, Err: e.Err}
}

// layers is an ordered list of configuration sections, most specific
// first: a value is taken from the first section that sets it.
type layers []*discovery.Config

// settingsLayers returns the sections for names, most specific first,
// ending with the unnamed Aspire:Npgsql section.
func settingsLayers(cfg *discovery.Config, names ...string) layers {
	root := cfg.Section(SettingsSection)
	var l layers
	for _, n := range names {
		if n != "" {
			l = append(l, root.Section(n))
		}
	}
	return append(l, root)
}

func (l layers) find(key string) (*discovery.Config, bool) {
	for _, c := range l {
		if v, ok := c.Lookup(key); ok && strings.TrimSpace(v) != "" {
			return c, true
		}
	}
	return nil, false
}

// key names key in the first section that sets it, else in the unnamed
// section, for an error about its value.
func (l layers) key(key string) string {
	if c, ok := l.find(key); ok {
		return c.Path() + ":" + key
	}
	return SettingsSection + ":" + key
}

func (l layers) bool(key string, def bool) (bool, error) {
	if c, ok := l.find(key); ok {
		return c.Bool(key, def)
	}
	return def, nil
}

func (l layers) int(key string) (int, bool, error) {
	if c, ok := l.find(key); ok {
		n, err := c.Int(key, 0)
		return n, err == nil, err
	}
	return 0, false, nil
}

func (l layers) duration(key string) (time.Duration, bool, error) {
	if c, ok := l.find(key); ok {
		d, err := c.Duration(key, 0)
		if err == nil && d < 0 {
			err = &discovery.KeyError{Key: c.Path() + ":" + key, Err: errors.New("must not be negative")}
		}
		return d, err == nil, err
	}
	return 0, false, nil
}

// readPoolSettings reads the settings of one connection into p, applying
// the pool overrides to p.Config.
func readPoolSettings(l layers, p *PoolConfig) error {
	c := p.Config
	var err error
	if p.DisableHealthChecks, err = l.bool("DisableHealthChecks", false); err != nil {
		return err
	}
	if sec, ok := l.find("HealthCheckFailureStatus"); ok {
		v, _ := sec.Lookup("HealthCheckFailureStatus")
		if p.HealthCheckFailureStatus, err = health.ParseFailureStatus(v); err != nil {
			return &discovery.KeyError{Key: sec.Path() + ":HealthCheckFailureStatus", Err: err}
		}
	}
	if sec, ok := l.find("Authentication"); ok {
		v, _ := sec.Lookup("Authentication")
		if p.Authentication, err = ParseAuthentication(v); err != nil {
			return &discovery.KeyError{Key: sec.Path() + ":Authentication", Err: err}
		}
	}
	if p.DisableTracing, err = l.bool("DisableTracing", false); err != nil {
		return err
	}
	if p.DisableMetrics, err = l.bool("DisableMetrics", false); err != nil {
		return err
	}

	ints := []struct {
		key string
		dst *int32
		min int
	}{
		{"MaxConnections", &c.MaxConns, 1},
		{"MinConnections", &c.MinConns, 0},
		{"MinIdleConnections", &c.MinIdleConns, 0},
	}
	for _, it := range ints {
		n, ok, err := l.int(it.key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if n < it.min || n > 1<<30 {
			return &discovery.KeyError{Key: l.key(it.key), Err: fmt.Errorf("must be at least %d", it.min)}
		}
		*it.dst = int32(n)
	}
	if c.MinConns > c.MaxConns || c.MinIdleConns > c.MaxConns {
		k := l.key("MinConnections")
		if c.MinIdleConns > c.MaxConns {
			k = l.key("MinIdleConnections")
		}
		return &discovery.KeyError{Key: k, Err: errors.New("MinConnections and MinIdleConnections must not exceed MaxConnections")}
	}

	durs := []struct {
		key string
		dst *time.Duration
	}{
		{"MaxConnectionLifetime", &c.MaxConnLifetime},
		{"MaxConnectionLifetimeJitter", &c.MaxConnLifetimeJitter},
		{"MaxConnectionIdleTime", &c.MaxConnIdleTime},
		{"HealthCheckPeriod", &c.HealthCheckPeriod},
		{"ConnectTimeout", &c.ConnConfig.ConnectTimeout},
		{"ConnectRetry:InitialInterval", &p.ConnectRetry.InitialInterval},
		{"ConnectRetry:MaxInterval", &p.ConnectRetry.MaxInterval},
		{"ConnectRetry:MaxElapsed", &p.ConnectRetry.MaxElapsed},
		{"ConnectRetry:WaitOnOpen", &p.WaitOnOpen},
	}
	for _, it := range durs {
		d, ok, err := l.duration(it.key)
		if err != nil {
			return err
		}
		if ok {
			*it.dst = d
		}
	}
	if c.HealthCheckPeriod <= 0 {
		return &discovery.KeyError{Key: l.key("HealthCheckPeriod"), Err: errors.New("must be positive")}
	}
	if d, ok, err := l.duration("CommandTimeout"); err != nil {
		return err
	} else if ok {
		p.CommandTimeout = d
		if d == 0 {
			p.CommandTimeout = -1 // configured 0: no bound
		}
	}
	return nil
}

// resolveConnection finds the connection string of name, in this order:
// ConnectionStrings:name; the Aspire 13 variable NAME_URI; the variables
// NAME_HOST, NAME_PORT, NAME_USERNAME, NAME_PASSWORD, NAME_DATABASENAME;
// Aspire:Npgsql:{name}:ConnectionString; Aspire:Npgsql:ConnectionString.
// It returns the pgx configuration and the source's name.
func resolveConnection(cfg *discovery.Config, name string, l layers) (*pgxpool.Config, string, error) {
	c, source, _, err := resolveConnectionTimeout(cfg, name, l)
	return c, source, err
}

// resolveConnectionTimeout is resolveConnection that also returns the
// connection string's Command Timeout as a PoolConfig.CommandTimeout: 0
// when it sets none, negative for its 0 (no limit).
func resolveConnectionTimeout(cfg *discovery.Config, name string, l layers) (*pgxpool.Config, string, time.Duration, error) {
	c, source, cmd, _, err := resolveConnectionUser(cfg, name, l)
	return c, source, cmd, err
}

// resolveConnectionUser is resolveConnectionTimeout that also reports
// whether the connection string named a user.
func resolveConnectionUser(cfg *discovery.Config, name string, l layers) (*pgxpool.Config, string, time.Duration, bool, error) {
	var cmd time.Duration
	named := true
	c, source, err := resolveConnectionWith(cfg, name, l, func(s string) {
		if d, ok := commandTimeoutKeyword(s); ok {
			cmd = d
			if d == 0 {
				cmd = -1
			}
		}
		named = namesUser(s)
	})
	return c, source, cmd, named, err
}

func resolveConnectionWith(cfg *discovery.Config, name string, l layers, parsed func(string)) (*pgxpool.Config, string, error) {
	conn, err := cfg.Connection(name)
	if err != nil && !errors.Is(err, discovery.ErrNotFound) {
		return nil, "", &ConnectionError{Name: name, Err: err}
	}
	parse := func(source, s string) (*pgxpool.Config, string, error) {
		c, err := ParseConnectionString(s)
		if err != nil {
			return nil, source, &ConnectionError{Name: name, Source: source, Err: err}
		}
		parsed(s)
		return c, source, nil
	}
	env := conn.PropertyPrefix // NAME_, or the portable alias's
	if env == "" {
		env = discovery.EnvName(name) + "_"
	}
	switch {
	case strings.TrimSpace(conn.ConnectionString) != "":
		return parse(conn.ConnectionStringKey, conn.ConnectionString)
	case strings.TrimSpace(conn.URI) != "":
		return parse(env+"URI", conn.URI)
	case conn.Host != "":
		var b strings.Builder
		var vars []string
		byKeyword := map[string]string{}
		add := func(k, v, suffix string) {
			if v != "" {
				fmt.Fprintf(&b, "%s=%s;", k, connstr.QuoteValue(v))
				vars = append(vars, env+suffix)
				byKeyword[k] = env + suffix
			}
		}
		add("Host", conn.Host, "HOST")
		add("Port", conn.Port, "PORT")
		add("Username", conn.Username, "USERNAME")
		add("Password", conn.Password, "PASSWORD")
		add("Database", conn.DatabaseName, "DATABASENAME")
		c, source, err := parse(env+"HOST", b.String())
		if err != nil {
			// The keyword at fault (Port, say) is one of the
			// variables: name it, else all of them.
			var kerr *KeywordError
			if errors.As(err, &kerr) && byKeyword[kerr.Keyword] != "" {
				err.(*ConnectionError).Source = byKeyword[kerr.Keyword]
			} else {
				err.(*ConnectionError).Source = strings.Join(vars, "/")
			}
		}
		return c, source, err
	case conn.HasProperties():
		return nil, "", &ConnectionError{Name: name, Err: fmt.Errorf("%w: %sHOST is not set (only other %s* properties are)", discovery.ErrNotFound, env, env)}
	}
	for _, c := range l {
		if s := strings.TrimSpace(c.String("ConnectionString")); s != "" {
			return parse(c.Path()+":ConnectionString", s)
		}
	}
	return nil, "", &ConnectionError{Name: name, Err: fmt.Errorf("%w: set %s, or %s:%s:ConnectionString",
		discovery.ErrNotFound, strings.Join(discovery.ConnectionVariables(name), ", "), SettingsSection, name)}
}

// hasConnection reports whether anything is configured for name.
func hasConnection(cfg *discovery.Config, name string) bool {
	_, err := cfg.Connection(name)
	return err == nil
}

// readDBSettings reads the settings of a DB (as opposed to one of its
// pools) into c.
func readDBSettings(l layers, c *Config) error {
	var err error
	if c.ReadYourWrites, err = l.bool("ReadYourWrites", false); err != nil {
		return err
	}
	if c.DisableMetrics, err = l.bool("DisableMetrics", false); err != nil {
		return err
	}
	if d, ok, err := l.duration("Replicas:CheckInterval"); err != nil {
		return err
	} else if ok {
		if d <= 0 {
			return &discovery.KeyError{Key: l.key("Replicas:CheckInterval"), Err: errors.New("must be positive")}
		}
		c.CheckInterval = d
	}
	if d, ok, err := l.duration("Replicas:CheckTimeout"); err != nil {
		return err
	} else if ok {
		c.CheckTimeout = d
	}
	if d, ok, err := l.duration("Replicas:ReadAttemptTimeout"); err != nil {
		return err
	} else if ok {
		c.ReadAttemptTimeout = d
		if d == 0 {
			c.ReadAttemptTimeout = -1 // configured 0: no bound
		}
	}
	if d, ok, err := l.duration("Replicas:MaxLag"); err != nil {
		return err
	} else if ok {
		c.MaxLag = d
		if d == 0 {
			c.MaxLag = -1 // configured 0: no bound
		}
	}
	if n, ok, err := l.int("Replicas:MaxLagBytes"); err != nil {
		return err
	} else if ok {
		if n < 0 {
			return &discovery.KeyError{Key: l.key("Replicas:MaxLagBytes"), Err: errors.New("must not be negative")}
		}
		c.MaxLagBytes = int64(n)
	}
	return nil
}

// resolveNames finds the primary and replica connection names of the DB
// called name: Aspire:Npgsql:{name}:Primary and
// Aspire:Npgsql:{name}:Replicas:Names when set, else by convention.
func resolveNames(cfg *discovery.Config, name string) (string, []string, error) {
	sec := cfg.Section(SettingsSection).Section(name)
	primary := strings.TrimSpace(sec.String("Primary"))
	switch {
	case primary != "":
	case hasConnection(cfg, name):
		primary = name
	case hasConnection(cfg, name+"-primary"):
		primary = name + "-primary"
	default:
		return "", nil, &ConnectionError{Name: name, Err: fmt.Errorf("%w: no primary: set ConnectionStrings__%s or ConnectionStrings__%s-primary, or %s:%s:Primary",
			discovery.ErrNotFound, name, name, SettingsSection, name)}
	}

	var replicas []string
	names := sec.Section("Replicas").Section("Names")
	if v := strings.TrimSpace(sec.String("Replicas:Names")); v != "" {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				replicas = append(replicas, r)
			}
		}
	} else if kids := names.Children(); len(kids) > 0 {
		sort.Slice(kids, func(i, j int) bool { return numericLess(kids[i], kids[j]) })
		for _, k := range kids {
			if r := strings.TrimSpace(names.String(k)); r != "" {
				replicas = append(replicas, r)
			}
		}
	} else {
		replicas = discoverReplicas(cfg, name)
	}
	return primary, replicas, nil
}

func numericLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// discoverReplicas finds the connections named "{name}-replica*", from
// ConnectionStrings and from Aspire 13's NAME_REPLICA*_URI/_HOST variables,
// sorted by name.
func discoverReplicas(cfg *discovery.Config, name string) []string {
	seen := map[string]bool{}
	var out []string
	// Compared as portable names, so Aspire 13.6's aliases
	// (ConnectionStrings__db_replica_east) are found too.
	prefix := strings.ToLower(discovery.PortableName(name + "-replica"))
	for _, k := range cfg.Section("ConnectionStrings").Children() {
		if strings.HasPrefix(strings.ToLower(discovery.PortableName(k)), prefix) && !seen[discovery.EnvName(k)] {
			seen[discovery.EnvName(k)] = true
			out = append(out, k)
		}
	}
	envPrefix := discovery.EnvName(name) + "_REPLICA"
	for _, k := range cfg.Children() {
		u := strings.ToUpper(k)
		if !strings.HasPrefix(u, envPrefix) {
			continue
		}
		var base string
		switch {
		case strings.HasSuffix(u, "_URI"):
			base = u[:len(u)-len("_URI")]
		case strings.HasSuffix(u, "_HOST"):
			base = u[:len(u)-len("_HOST")]
		default:
			continue
		}
		if !seen[base] {
			seen[base] = true
			out = append(out, base)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i]) < strings.ToLower(out[j]) })
	return out
}

// dbSettings are the settings of an open DB, with defaults applied.
type dbSettings struct {
	readYourWrites bool
	checkInterval  time.Duration
	checkTimeout   time.Duration
	readAttempt    time.Duration // 0: no bound
	maxLag         time.Duration // 0: no bound
	maxLagBytes    int64
	disableMetrics bool
}
