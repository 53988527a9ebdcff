package cqrs

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/goaspire/goaspire/internal/connstr"
)

// hostList returns "host:port" of the config's first host and its fallbacks,
// without TLS duplicates.
func hostList(c *pgxpool.Config) []string {
	cc := c.ConnConfig
	out := []string{net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))}
	for _, f := range cc.Fallbacks {
		hp := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))
		if out[len(out)-1] != hp {
			out = append(out, hp)
		}
	}
	return out
}

func TestParseKeywordForm(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, c *pgxpool.Config)
	}{
		{"aspire", "Host=localhost;Port=5433;Username=postgres;Password=p@ss;Database=db", func(t *testing.T, c *pgxpool.Config) {
			cc := c.ConnConfig
			if cc.Host != "localhost" || cc.Port != 5433 || cc.User != "postgres" || cc.Password != "p@ss" || cc.Database != "db" {
				t.Errorf("got %s:%d user=%s db=%s", cc.Host, cc.Port, cc.User, cc.Database)
			}
			// Npgsql defaults.
			if cc.ConnectTimeout != 15*time.Second || c.MaxConns != 100 || c.MinConns != 0 ||
				c.MaxConnIdleTime != 300*time.Second || c.HealthCheckPeriod != 10*time.Second {
				t.Errorf("defaults: timeout=%v max=%d min=%d idle=%v prune=%v", cc.ConnectTimeout, c.MaxConns, c.MinConns, c.MaxConnIdleTime, c.HealthCheckPeriod)
			}
			// SSL Mode defaults to Prefer: TLS first, then plain text.
			if cc.TLSConfig == nil || len(cc.Fallbacks) != 1 || cc.Fallbacks[0].TLSConfig != nil {
				t.Errorf("want prefer (TLS then plain), got TLS=%v fallbacks=%d", cc.TLSConfig != nil, len(cc.Fallbacks))
			}
			if strings.Contains(c.ConnString(), "p@ss") {
				t.Errorf("ConnString holds the password: %q", c.ConnString())
			}
		}},
		{"synonyms and spaces", "SERVER=h;  user id = u ; PWD=pw; DB=d; sslmode=disable", func(t *testing.T, c *pgxpool.Config) {
			cc := c.ConnConfig
			if cc.Host != "h" || cc.User != "u" || cc.Password != "pw" || cc.Database != "d" || cc.TLSConfig != nil {
				t.Errorf("got %+v", cc.Config)
			}
		}},
		{"more synonyms", "Host=h;UserName=a;PSW=b;Uid=c", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.User != "c" || c.ConnConfig.Password != "b" {
				t.Errorf("user=%q", c.ConnConfig.User)
			}
		}},
		{"quoted values", `Host=h;Password="a;b=c""d";Application Name='it''s me';SSL Mode=Disable`, func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.Password != `a;b=c"d` {
				t.Errorf("password %q", c.ConnConfig.Password)
			}
			if got := c.ConnConfig.RuntimeParams["application_name"]; got != "it's me" {
				t.Errorf("application_name %q", got)
			}
		}},
		{"backslashes survive", `Host=h;Password=a\b'c;Search Path=s\1;SSL Mode=Disable`, func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.Password != `a\b'c` || c.ConnConfig.RuntimeParams["search_path"] != `s\1` {
				t.Errorf("password %q search_path %q", c.ConnConfig.Password, c.ConnConfig.RuntimeParams["search_path"])
			}
		}},
		{"host list with ports", "Host=a:5433,b,[::1]:7,::2,/tmp/pg;Port=6000;SSL Mode=Disable", func(t *testing.T, c *pgxpool.Config) {
			want := []string{"a:5433", "b:6000", "[::1]:7", "[::2]:6000", "/tmp/pg:6000"}
			if got := hostList(c); !reflect.DeepEqual(got, want) {
				t.Errorf("hosts %v, want %v", got, want)
			}
		}},
		{"pool and timeouts", "Host=h;Minimum Pool Size=2;MaxPoolSize=7;Timeout=3;Command Timeout=10;Connection Idle Lifetime=60;Connection Pruning Interval=5;Connection Lifetime=600", func(t *testing.T, c *pgxpool.Config) {
			if c.MinConns != 2 || c.MaxConns != 7 || c.ConnConfig.ConnectTimeout != 3*time.Second ||
				c.MaxConnIdleTime != time.Minute || c.HealthCheckPeriod != 5*time.Second || c.MaxConnLifetime != 10*time.Minute {
				t.Errorf("min=%d max=%d timeout=%v idle=%v prune=%v life=%v", c.MinConns, c.MaxConns, c.ConnConfig.ConnectTimeout, c.MaxConnIdleTime, c.HealthCheckPeriod, c.MaxConnLifetime)
			}
			if got := c.ConnConfig.RuntimeParams["statement_timeout"]; got != "10000" {
				t.Errorf("statement_timeout %q", got)
			}
		}},
		{"command timeout zero sends nothing", "Host=h;Command Timeout=0;Load Balance Timeout=0", func(t *testing.T, c *pgxpool.Config) {
			if _, ok := c.ConnConfig.RuntimeParams["statement_timeout"]; ok {
				t.Error("statement_timeout sent for Command Timeout=0")
			}
			if c.MaxConnLifetime < 24*time.Hour {
				t.Errorf("Connection Lifetime=0 should mean no limit, got %v", c.MaxConnLifetime)
			}
		}},
		{"runtime parameters", "Host=h;Search Path=app,public;Timezone=UTC;Client Encoding=utf-8;Encoding=UTF8;Options=-c work_mem=64MB", func(t *testing.T, c *pgxpool.Config) {
			want := map[string]string{"search_path": "app,public", "timezone": "UTC", "client_encoding": "UTF8", "options": "-c work_mem=64MB"}
			for k, v := range want {
				if c.ConnConfig.RuntimeParams[k] != v {
					t.Errorf("%s = %q, want %q", k, c.ConnConfig.RuntimeParams[k], v)
				}
			}
		}},
		{"ssl modes", "Host=h;SSL Mode=VerifyFull;Root Certificate=testdata/none-needed-for-disable", nil},
		{"target session attributes", "Host=a,b;Target Session Attributes=read-write", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.ValidateConnect == nil {
				t.Error("no ValidateConnect for read-write")
			}
		}},
		{"prefer-primary with one host", "Host=a;Target Session Attributes=prefer-primary", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.ValidateConnect != nil {
				t.Error("one host: prefer-primary is any")
			}
		}},
		{"accepted and ignored", "Host=h;Enlist=true;Multiplexing=true;Pooling=true;Max Auto Prepare=10;Auto Prepare Min Usages=2;" +
			"No Reset On Close=true;Include Error Detail=true;Log Parameters=true;Persist Security Info=true;Trust Server Certificate=true;" +
			"Read Buffer Size=16384;Write Buffer Size=16384;Socket Receive Buffer Size=1;Socket Send Buffer Size=1;Internal Command Timeout=5;" +
			"Cancellation Timeout=2000;Host Recheck Seconds=5;Load Table Composites=false;Array Nullability Mode=Never;Server Compatibility Mode=None;" +
			"Replication Mode=Off;Check Certificate Revocation=false;Integrated Security=false;Include Realm=false;Kerberos Service Name=pg;" +
			"GSS Encryption Mode=Prefer;Write Coalescing Buffer Threshold Bytes=1000;EF Template Database=t;EF Admin Database=a", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.KerberosSrvName != "pg" {
				t.Errorf("krbsrvname %q", c.ConnConfig.KerberosSrvName)
			}
		}},
		{"auth and channel binding", "Host=h;Channel Binding=Require;Require Auth=ScramSHA256", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.ChannelBinding != "require" || c.ConnConfig.RequireAuth != "scram-sha-256" {
				t.Errorf("channel_binding %q require_auth %q", c.ConnConfig.ChannelBinding, c.ConnConfig.RequireAuth)
			}
		}},
		{"keepalive", "Host=h;Keepalive=30;Tcp Keepalive=true;Tcp Keepalive Interval=1000", func(t *testing.T, c *pgxpool.Config) {
			if c.ConnConfig.DialFunc == nil {
				t.Error("no dialer for keepalive settings")
			}
		}},
		{"load balance hosts", "Host=a,b,c;Load Balance Hosts=true;SSL Mode=Disable", func(t *testing.T, c *pgxpool.Config) {
			if c.BeforeConnect == nil {
				t.Fatal("no BeforeConnect")
			}
			var firsts []string
			for range 4 {
				cc := c.ConnConfig.Copy()
				if err := c.BeforeConnect(context.Background(), cc); err != nil {
					t.Fatal(err)
				}
				firsts = append(firsts, cc.Host)
				if len(cc.Fallbacks) != 2 {
					t.Fatalf("fallbacks %d", len(cc.Fallbacks))
				}
			}
			if want := []string{"a", "b", "c", "a"}; !reflect.DeepEqual(firsts, want) {
				t.Errorf("first hosts %v, want %v", firsts, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConnectionString(tt.in)
			if tt.name == "ssl modes" {
				// The root certificate file does not exist: pgx reads it
				// while parsing, and the error says so without secrets.
				if err == nil || !strings.Contains(err.Error(), "none-needed-for-disable") {
					t.Fatalf("want a missing-file error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestParseSSLModes(t *testing.T) {
	for in, want := range map[string]string{
		"Disable": "", "allow": "fallback", "Prefer": "fallback", "REQUIRE": "tls", "verify-ca": "tls", "VerifyFull": "tls",
	} {
		c, err := ParseConnectionString("Host=h;SSL Mode=" + in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		cc := c.ConnConfig
		got := ""
		switch {
		case len(cc.Fallbacks) > 0:
			got = "fallback"
		case cc.TLSConfig != nil:
			got = "tls"
		}
		if got != want {
			t.Errorf("SSL Mode=%s: %s, want %s", in, got, want)
		}
		if (in == "VerifyFull" || in == "verify-ca") && cc.TLSConfig.InsecureSkipVerify && cc.TLSConfig.VerifyPeerCertificate == nil {
			t.Errorf("SSL Mode=%s does not verify", in)
		}
	}
}

func TestParseURLForm(t *testing.T) {
	c, err := ParseConnectionString("postgresql://u:s%40cret@h1:5433,h2/db?sslmode=disable&application_name=app&search_path=s")
	if err != nil {
		t.Fatal(err)
	}
	cc := c.ConnConfig
	if cc.User != "u" || cc.Password != "s@cret" || cc.Database != "db" {
		t.Errorf("user=%q db=%q", cc.User, cc.Database)
	}
	if got := hostList(c); !reflect.DeepEqual(got, []string{"h1:5433", "h2:5432"}) {
		t.Errorf("hosts %v", got)
	}
	if cc.RuntimeParams["application_name"] != "app" || cc.RuntimeParams["search_path"] != "s" {
		t.Errorf("runtime params %v", cc.RuntimeParams)
	}
	if cc.ConnectTimeout != 15*time.Second || c.MaxConns != 100 {
		t.Errorf("Npgsql defaults not applied to the URL: %v %d", cc.ConnectTimeout, c.MaxConns)
	}

	c, err = ParseConnectionString("postgres://h/db?connect_timeout=2&pool_max_conns=3&pool_max_conn_idle_time=1m")
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnConfig.ConnectTimeout != 2*time.Second || c.MaxConns != 3 || c.MaxConnIdleTime != time.Minute {
		t.Errorf("URL settings not kept: %v %d %v", c.ConnConfig.ConnectTimeout, c.MaxConns, c.MaxConnIdleTime)
	}
}

func TestParseErrors(t *testing.T) {
	const secret = "hunter2-SECRET"
	tests := []struct {
		in      string
		keyword string
		is      error
	}{
		{"Host=h;Password=" + secret + ";Port=1;Bogus=" + secret, "Bogus", ErrUnknownKeyword},
		{"Host=h;Password=ab;" + secret + "=x", "Password", ErrUnknownKeyword},
		{"Host=h;Password=" + secret + ";Port=" + secret, "Port", ErrInvalidValue},
		{"Host=h;Port=70000", "Port", ErrInvalidValue},
		{"Password=" + secret, "Host", ErrInvalidValue},
		{"Host=h;SSL Mode=" + secret, "SSL Mode", ErrInvalidValue},
		{"Host=h;Pooling=false", "Pooling", ErrUnsupported},
		{"Host=h;Integrated Security=true", "Integrated Security", ErrUnsupported},
		{"Host=h;Check Certificate Revocation=true", "Check Certificate Revocation", ErrUnsupported},
		{"Host=h;Server Compatibility Mode=Redshift", "Server Compatibility Mode", ErrUnsupported},
		{"Host=h;Replication Mode=Logical", "Replication Mode", ErrUnsupported},
		{"Host=h;Encoding=LATIN1", "Encoding", ErrUnsupported},
		{"Host=h;GSS Encryption Mode=Require", "GSS Encryption Mode", ErrUnsupported},
		{"Host=a,b;Target Session Attributes=prefer-primary", "Target Session Attributes", ErrUnsupported},
		{"Host=h;Target Session Attributes=" + secret, "Target Session Attributes", ErrInvalidValue},
		{"Host=h;Minimum Pool Size=10;Maximum Pool Size=5", "Minimum Pool Size", ErrInvalidValue},
		{"Host=h;Maximum Pool Size=0", "Maximum Pool Size", ErrInvalidValue},
		{"Host=h;Timeout=-1", "Timeout", ErrInvalidValue},
		{"Host=h;SSL Mode=VerifyFull;Trust Server Certificate=true", "Trust Server Certificate", ErrInvalidValue},
		{"Host=h port=5432 user=" + secret, "Host", ErrInvalidValue},
		{"Host=h;Require Auth=" + secret, "Require Auth", ErrInvalidValue},
		{"Host=[::1;Password=" + secret, "Host", ErrInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.keyword, func(t *testing.T) {
			_, err := ParseConnectionString(tt.in)
			var kerr *KeywordError
			if !errors.As(err, &kerr) {
				t.Fatalf("error %v is not a *KeywordError", err)
			}
			if kerr.Keyword != tt.keyword || !errors.Is(err, tt.is) {
				t.Errorf("error %q: keyword %q, want %q wrapping %v", err, kerr.Keyword, tt.keyword, tt.is)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks a value: %q", err)
			}
		})
	}

	for _, in := range []string{
		"",
		"   ",
		`Host=h;Password="` + secret,
		"postgres://u:" + secret + "@h:99999/db",
		"postgres://u:" + secret + "@h/db?sslmode=bogus",
		"postgres://u:" + secret + "@[::1/db",
		"postgres://u:" + secret + "/x@h/db?pool_max_conns=x",
		"postgres://u:" + secret + "@h/db?pool_min_conns=9&pool_max_conns=2",
		"Host=h;Password=" + secret + ";SSL Mode=VerifyFull;Root Certificate=/nonexistent/" + "root.crt",
		"Host=h;SSL Password=" + secret + ";SSL Mode=Require;SSL Certificate=/nonexistent/c;SSL Key=/nonexistent/k",
	} {
		_, err := ParseConnectionString(in)
		if err == nil {
			t.Errorf("%q: no error", in)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %q", err)
		}
	}
}

// TestKeywordTable checks that every keyword in the table has a distinct
// normalized spelling and that the documented names are accepted.
func TestKeywordTable(t *testing.T) {
	for k, kw := range keywords {
		if k != connstr.NormalizeKey(k) {
			t.Errorf("key %q is not normalized", k)
		}
		if _, ok := keywords[connstr.NormalizeKey(kw.name)]; !ok {
			t.Errorf("canonical name %q is not a key", kw.name)
		}
	}
}

func TestLibpqDSNQuoting(t *testing.T) {
	in := map[string]string{"a": `x'y\z`, "b": ""}
	if got, want := libpqDSN(in), `a='x\'y\\z' b=''`; got != want {
		t.Errorf("libpqDSN = %s, want %s", got, want)
	}
}

func TestLSN(t *testing.T) {
	l, err := ParseLSN("16/B374D848")
	if err != nil || l != 0x16B374D848 || l.String() != "16/B374D848" {
		t.Errorf("ParseLSN: %v %v %s", l, err, l)
	}
	for _, bad := range []string{"", "1", "x/1", "1/100000000"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q): no error", bad)
		}
	}
}

func FuzzParseConnectionString(f *testing.F) {
	const marker = "Zq9SecretMarker"
	for _, s := range []string{
		"Host=localhost;Port=5432;Username=postgres;Database=db",
		`Server=a:1,[::1]:2;User ID=u;SSL Mode=Require;Timeout=3;Maximum Pool Size=7`,
		`Host="h;x";Application Name='a''b'`,
		"Host=h;Bogus=1",
		"Host=h;Port=0",
		"postgres://u@h:5432/db?sslmode=disable",
		"postgresql://h1,h2:5/db?pool_max_conns=2",
		"postgres://u@[::1",
		"Host=a,b;Load Balance Hosts=true;Target Session Attributes=standby",
		";;",
		"=",
	} {
		f.Add(s, "")
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, before, after string) {
		// The raw input must never panic.
		_, _ = ParseConnectionString(before + after)

		// With the marker as the password, no error may contain it.
		kw := before + ";Password=" + marker + ";" + after
		if _, err := ParseConnectionString(kw); err != nil && isPassword(kw, marker) && strings.Contains(err.Error(), marker) {
			t.Fatalf("error leaks the password: %q", err)
		}
		u := "postgres://user:" + marker + "@" + before + after
		if _, err := ParseConnectionString(u); err != nil && strings.Contains(err.Error(), marker) {
			t.Fatalf("error leaks the URL password: %q", err)
		}
	})
}

// isPassword reports whether the keyword string s, as lexed, has marker
// as a secret's value (an input can hide the marker inside another
// keyword's quoted value, where it is not a password).
func isPassword(s, marker string) bool {
	pairs, err := connstr.ParseKeyValue(s)
	if err != nil {
		return true // a lexing error quotes no value, so check anyway
	}
	for _, p := range pairs {
		if strings.Contains(p.Value, marker) {
			_, known := keywords[connstr.NormalizeKey(p.Key)]
			return connstr.NormalizeKey(p.Key) == "password" || !known
		}
	}
	return false
}

func TestScrub(t *testing.T) {
	tests := []struct {
		msg     string
		secrets []string
		want    string
	}{
		{"a hunter2 b hunter2", []string{"hunter2"}, "a *** b ***"},
		{"abc ab", []string{"ab", "abc"}, "*** ***"},
		{"x * y", []string{"*"}, "x *** y"}, // the mask holds the secret: no endless rewriting
		{"plain", []string{""}, "plain"},
	}
	for _, tt := range tests {
		if got := scrub(tt.msg, tt.secrets); got != tt.want {
			t.Errorf("scrub(%q, %q) = %q, want %q", tt.msg, tt.secrets, got, tt.want)
		}
	}
}

func TestUnquote(t *testing.T) {
	tests := []struct{ in, want string }{
		{`failed to parse as URL (extra key/value separator "=" in URI query parameter: "sslmode")`, ""},
		{`failed to parse as URL (unexpected character "x" at position 12 in URI (expected ":" or "/"))`, ""},
		{`failed to parse as URL (invalid percent-encoded token: "pa%zz")`, `failed to parse as URL (invalid percent-encoded token: "…")`},
		{`x (unexpected spaces found in ""a"secret"b"", use %20)`, `x (unexpected spaces found in "…", use %20)`},
		{`x (extra key/value separator "=" in URI query parameter: "Secret")`, `x (extra key/value separator "…")`},
		{"no quotes", ""},
	}
	for _, tt := range tests {
		want := tt.want
		if want == "" {
			want = tt.in
		}
		if got := unquote(tt.in); got != want {
			t.Errorf("unquote(%q) = %q, want %q", tt.in, got, want)
		}
	}
}
