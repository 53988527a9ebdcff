package natsmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/redact"
)

// ConfigSection is the configuration section LoadConfig reads, as Aspire's
// NATS client integration (Aspire.NATS.Net) does. Settings in
// "Aspire:NATS:Net:{name}" override those in the section itself.
const ConfigSection = "Aspire:NATS:Net"

// DefaultPort is the port of a server URL that names none.
const DefaultPort = 4222

// DefaultReconnectWait is the pause between reconnect attempts to one
// server when Config.ReconnectWait is zero (nats.go's default).
const DefaultReconnectWait = 2 * time.Second

// DefaultPingInterval is how often the client pings the server when
// Config.PingInterval is zero, and DefaultMaxPingOut how many pings may go
// unanswered when Config.MaxPingOut is zero. nats.go declares the
// connection stale at the tick after MaxPingOut unanswered pings, so a
// server gone silent (a partition: no RST, no FIN) is noticed within
// (DefaultMaxPingOut+1) × DefaultPingInterval = 6 s; the connection then
// reconnects and HealthCheck reports it Unhealthy. nats.go's own defaults
// (2 min, 2), which NATS.Net shares, take 6 minutes.
const (
	DefaultPingInterval = 2 * time.Second
	DefaultMaxPingOut   = 2
)

// Config describes one NATS connection. The zero value with Servers set
// works. Password and Token are secrets: String, GoString, LogValue and
// MarshalJSON mask them, so a Config may be logged or printed as is.
type Config struct {
	// Name is the connection's name: it names the health check
	// ("nats:{Name}"), is reported to the server as the client name, and
	// appears in logs.
	Name string
	// Servers are the server URLs (nats://host:port, tls://host:port),
	// without credentials. nats.go tries them in random order and
	// reconnects to any of them.
	Servers []string
	// User and Password authenticate with a user and password.
	User     string
	Password string
	// Token authenticates with a token (a URL nats://token@host:port).
	Token string
	// ReconnectWait is the pause between reconnect attempts to one server;
	// zero means DefaultReconnectWait. The connection reconnects forever.
	ReconnectWait time.Duration
	// DisableHealthChecks turns off the connection's health check.
	DisableHealthChecks bool
	// WaitOnOpen, when positive, makes New wait up to that long for the
	// first connection, and fail (closing the connection) when it does
	// not come. Zero (the default) does not wait: New returns at once and
	// the connection connects in the background.
	WaitOnOpen time.Duration
	// HealthCheckFailureStatus, when set (health.Unhealthy or
	// health.Degraded), is the status of every failure of the health
	// check; empty keeps HealthCheck's own: Unhealthy. LoadConfig reads it from
	// HealthCheckFailureStatus.
	HealthCheckFailureStatus health.Status
	// PingInterval is how often the client pings the server, and
	// MaxPingOut how many pings may be unanswered before the connection
	// is declared stale and reconnects (NATS.Net's NatsOpts names); zero
	// means DefaultPingInterval and DefaultMaxPingOut. A silent server is
	// noticed within (MaxPingOut+1) × PingInterval.
	PingInterval time.Duration
	MaxPingOut   int

	// Logger reports connection events (default: slog.Default()).
	Logger *slog.Logger `json:"-"`
	// Options are nats.go options New applies after its own (so they
	// win): TLS settings, a credentials file, NKeys and the like.
	Options []nats.Option `json:"-"`
}

// LoadConfig reads the connection called name from cfg:
//
//   - ConnectionStrings:{name}, else the Aspire 13 variables {NAME}_URI,
//     else {NAME}_HOST and {NAME}_PORT (with {NAME}_USERNAME and
//     {NAME}_PASSWORD), else Aspire:NATS:Net[:{name}]:ConnectionString;
//     a connection string is one or more URLs separated by commas,
//     nats://[user:password@]host[:port] or nats://token@host[:port]
//     (schemes nats, tls, ws, wss; port 4222 when none is given), every
//     URL with the same credentials or none;
//   - DisableHealthChecks, HealthCheckFailureStatus, PingInterval,
//     MaxPingOut and WaitOnOpen from
//     Aspire:NATS:Net, overridden by Aspire:NATS:Net:{name} (Aspire 8's
//     HealthChecks=false is accepted too); PingInterval must be positive,
//     MaxPingOut at least 1, WaitOnOpen not negative.
//
// Aspire's DisableTracing has no equivalent here: nats.go makes no spans,
// and the traced helpers of this package take their TracerProvider as an
// option. Errors name the key or variable at fault (errors.As gives a
// *discovery.KeyError) and never contain a password or token. Set Logger
// and Options on the result before calling New.
func LoadConfig(cfg *discovery.Config, name string) (*Config, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("natsmsg: empty connection name")
	}
	general := cfg.Section(ConfigSection)
	named := general.Section(name)
	c := &Config{Name: name}

	var errs []error
	for _, sec := range []*discovery.Config{general, named} {
		if sec.Exists("HealthChecks") {
			on, err := sec.Bool("HealthChecks", true)
			errs = append(errs, err)
			c.DisableHealthChecks = !on
		}
		if sec.Exists("DisableHealthChecks") {
			off, err := sec.Bool("DisableHealthChecks", false)
			errs = append(errs, err)
			c.DisableHealthChecks = off
		}
		if v := strings.TrimSpace(sec.String("HealthCheckFailureStatus")); v != "" {
			st, err := health.ParseFailureStatus(v)
			if err != nil {
				err = &discovery.KeyError{Key: sec.Path() + ":HealthCheckFailureStatus", Err: err}
			}
			errs = append(errs, err)
			c.HealthCheckFailureStatus = st
		}
		if set(sec, "PingInterval") {
			d, err := sec.Duration("PingInterval", 0)
			if err == nil && d <= 0 {
				err = &discovery.KeyError{Key: sec.Path() + ":PingInterval", Err: errors.New("must be positive")}
			}
			errs = append(errs, err)
			c.PingInterval = d
		}
		if set(sec, "WaitOnOpen") {
			d, err := sec.Duration("WaitOnOpen", 0)
			if err == nil && d < 0 {
				err = &discovery.KeyError{Key: sec.Path() + ":WaitOnOpen", Err: errors.New("must not be negative")}
			}
			errs = append(errs, err)
			c.WaitOnOpen = d
		}
		if set(sec, "MaxPingOut") {
			n, err := sec.Int("MaxPingOut", 0)
			if err == nil && n < 1 {
				err = &discovery.KeyError{Key: sec.Path() + ":MaxPingOut", Err: errors.New("must be at least 1")}
			}
			errs = append(errs, err)
			c.MaxPingOut = n
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("natsmsg: %w", err)
	}

	conn, connErr := cfg.Connection(name)
	p := conn.PropertyPrefix // the name's NAME_, or the portable alias's
	if p == "" {
		p = discovery.EnvName(name) + "_"
	}
	var raw, key string
	switch {
	case connErr == nil && strings.TrimSpace(conn.ConnectionString) != "":
		raw, key = conn.ConnectionString, conn.ConnectionStringKey
	case connErr == nil && conn.URI != "":
		raw, key = conn.URI, p+"URI"
	case connErr == nil && conn.Host != "":
		port := conn.Port
		if port == "" {
			port = strconv.Itoa(DefaultPort)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("natsmsg: %w", &discovery.KeyError{Key: p + "PORT", Err: errors.New("not a port number from 1 to 65535")})
		}
		c.Servers = []string{"nats://" + net.JoinHostPort(conn.Host, port)}
		c.User, c.Password = conn.Username, conn.Password
		return c, nil
	case connErr == nil:
		return nil, fmt.Errorf("natsmsg: connection %q: %sHOST is not set (only other %s* properties are)", name, p, p)
	default:
		for _, sec := range []*discovery.Config{named, general} {
			if s := sec.String("ConnectionString"); strings.TrimSpace(s) != "" {
				raw, key = s, sec.Path()+":ConnectionString"
				break
			}
		}
		if raw == "" {
			return nil, fmt.Errorf("natsmsg: %w (or %s:%s:ConnectionString)", connErr, ConfigSection, name)
		}
	}
	if err := c.parse(raw); err != nil {
		return nil, fmt.Errorf("natsmsg: %w", &discovery.KeyError{Key: key, Err: err})
	}
	if conn.Password != "" && c.Password == "" && c.Token == "" {
		c.Password = conn.Password
		if c.User == "" {
			c.User = conn.Username
		}
	}
	return c, nil
}

// set reports whether sec has a non-empty value for key.
func set(sec *discovery.Config, key string) bool {
	v, ok := sec.Lookup(key)
	return ok && strings.TrimSpace(v) != ""
}

// ParseConnectionString returns the Config of a NATS connection string:
// one or more URLs separated by commas, as LoadConfig accepts them. Errors
// never contain a password or token.
func ParseConnectionString(s string) (*Config, error) {
	c := &Config{}
	if err := c.parse(s); err != nil {
		return nil, fmt.Errorf("natsmsg: connection string: %w", err)
	}
	return c, nil
}

// parse fills Servers and the credentials from a connection string.
func (c *Config) parse(s string) error {
	parts := strings.Split(s, ",")
	credsSet := false
	for i, part := range parts {
		part = strings.TrimSpace(part)
		where := fmt.Sprintf("URL %d of %d", i+1, len(parts))
		if len(parts) == 1 {
			where = "URL"
		}
		if part == "" {
			return fmt.Errorf("%s is empty", where)
		}
		if !strings.Contains(part, "://") {
			part = "nats://" + part // a bare host:port, as nats.go accepts
		}
		u, err := url.Parse(part)
		if err != nil {
			// url's error quotes the input, which may hold a password.
			return fmt.Errorf("%s does not parse as nats://[user:password@]host[:port]", where)
		}
		switch strings.ToLower(u.Scheme) {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%s: scheme %q: want nats, tls, ws or wss", where, u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%s has no host", where)
		}
		port := u.Port()
		if port == "" {
			port = strconv.Itoa(DefaultPort)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%s: %q is not a port number", where, port)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%s: a NATS URL has no path, query or fragment", where)
		}
		var user, pass, token string
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				user, pass = u.User.Username(), p
			} else {
				token = u.User.Username()
			}
		}
		if u.User != nil {
			if credsSet && (user != c.User || pass != c.Password || token != c.Token) {
				return fmt.Errorf("%s has other credentials than an earlier URL: give every URL the same or none", where)
			}
			c.User, c.Password, c.Token, credsSet = user, pass, token, true
		}
		c.Servers = append(c.Servers, strings.ToLower(u.Scheme)+"://"+net.JoinHostPort(u.Hostname(), port))
	}
	return nil
}

// String describes c with its password and token masked.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats %q servers=%s", c.Name, strings.Join(c.Servers, ","))
	if c.User != "" {
		fmt.Fprintf(&b, " user=%s", c.User)
	}
	if c.Password != "" {
		b.WriteString(" password=" + redact.Mask)
	}
	if c.Token != "" {
		b.WriteString(" token=" + redact.Mask)
	}
	return b.String()
}

// GoString is String, for %#v.
func (c Config) GoString() string { return "natsmsg.Config{" + c.String() + "}" }

// masked returns c with its secrets replaced by the mask.
func (c Config) masked() Config {
	if c.Password != "" {
		c.Password = redact.Mask
	}
	if c.Token != "" {
		c.Token = redact.Mask
	}
	return c
}

// LogValue logs c with its password and token masked.
func (c Config) LogValue() slog.Value {
	m := c.masked()
	return slog.GroupValue(
		slog.String("name", m.Name),
		slog.Any("servers", m.Servers),
		slog.String("user", m.User),
		slog.String("password", m.Password),
		slog.String("token", m.Token),
	)
}

// MarshalJSON encodes c with its password and token masked.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config // without the methods
	return json.Marshal(plain(c.masked()))
}
