package discovery

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseDurationRange(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"106751.23:47:16", 106751*24*time.Hour + 23*time.Hour + 47*time.Minute + 16*time.Second, true},
		{"106751.23:47:16.8547758", 106751*24*time.Hour + 23*time.Hour + 47*time.Minute + 16*time.Second + 854775800, true},
		{"-106751.23:47:16", -(106751*24*time.Hour + 23*time.Hour + 47*time.Minute + 16*time.Second), true},
		{"106751.23:47:17", 0, false},
		{"106752.00:00:00", 0, false},
		{"213504.00:00:00", 0, false}, // wrapped to 25m26s before
		{"-213504.00:00:00", 0, false},
		{"10675199.02:48:05.4775807", 0, false}, // TimeSpan.MaxValue
		{"3000000h", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ParseDuration(%q) error %q does not say it is out of range", tt.in, err)
		}
	}

	c := FromMap(map[string]string{"Aspire:ServiceDefaults:ShutdownTimeout": "213504.00:00:00"})
	_, err := c.Section("Aspire:ServiceDefaults").Duration("ShutdownTimeout", 0)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "Aspire:ServiceDefaults:ShutdownTimeout" {
		t.Fatalf("Duration error = %v, want a KeyError naming the key", err)
	}
}

// Typed getters never quote the value of a key that names a secret, and
// quote other values shortened and scrubbed.
func TestGettersRedactValues(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	c := FromMap(map[string]string{
		"Db:Password":    "hunter2",
		"Db:ApiKey":      "hunter2:00",
		"Db:Timeout":     huge,
		"Db:Port":        huge,
		"Db:Url":         "postgres://u:hunter2@h/db",
		"Db:Retries":     "Host=h;Password=hunter2",
		"PORT":           huge,
		"ASPNETCORE_URL": "",
	})
	s := c.Section("Db")
	tests := []struct {
		name string
		err  error
		key  string
	}{
		{"Duration of a secret", second(s.Duration("Password", 0)), "Db:Password"},
		{"Duration of a secret that looks like a TimeSpan", second(s.Duration("ApiKey", 0)), "Db:ApiKey"},
		{"Int of a secret", second(s.Int("Password", 0)), "Db:Password"},
		{"Float of a secret", second(s.Float("Password", 0)), "Db:Password"},
		{"Bool of a secret", second(s.Bool("Password", false)), "Db:Password"},
		{"Duration of a huge value", second(s.Duration("Timeout", 0)), "Db:Timeout"},
		{"Int of a huge value", second(s.Int("Port", 0)), "Db:Port"},
		{"Int of a URL with a password", second(s.Int("Url", 0)), "Db:Url"},
		{"Int of a connection string", second(s.Int("Retries", 0)), "Db:Retries"},
		{"huge PORT", second(c.ListenAddress()), "PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ke *KeyError
			if !errors.As(tt.err, &ke) || ke.Key != tt.key {
				t.Fatalf("error = %v, want a KeyError naming %q", tt.err, tt.key)
			}
			msg := tt.err.Error()
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error quotes the secret: %s", msg)
			}
			if len(msg) > 200 {
				t.Errorf("error is %d bytes long, want the value shortened: %.100s…", len(msg), msg)
			}
		})
	}
}

func TestListenAddressURLPassword(t *testing.T) {
	for _, v := range []string{
		"http://u:hunter2@127.0.0.1:5000",
		"http://u:hunter2@127.0.0.1:5000/;https://+:1",
		"http//u:hunter2@127.0.0.1:5000",
		"http://u:hunter2@[::1",
	} {
		_, err := FromMap(map[string]string{"ASPNETCORE_URLS": v}).ListenAddress()
		if err == nil || !strings.Contains(err.Error(), `"ASPNETCORE_URLS"`) {
			t.Errorf("%s: error = %v, want one naming ASPNETCORE_URLS", v, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error quotes the password: %v", v, err)
		}
	}
}

func TestFromMapKeysWithEquals(t *testing.T) {
	c := FromMap(map[string]string{"x=y": "1", "a==b": "2", "Section:k=v": "3"})
	for k, want := range map[string]string{"x=y": "1", "a==b": "2", "Section:k=v": "3"} {
		if got, ok := c.Lookup(k); !ok || got != want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", k, got, ok, want)
		}
	}
	if v, ok := c.Lookup("x"); ok {
		t.Errorf("Lookup(x) = %q: the key was cut at '='", v)
	}
}

func TestResolveNilURL(t *testing.T) {
	r := NewResolver(FromMap(nil))
	if u, err := r.Resolve(nil); !errors.Is(err, ErrNilURL) || u != nil {
		t.Errorf("Resolve(nil) = %v, %v; want ErrNilURL", u, err)
	}
	if eps, err := r.Endpoints(nil); !errors.Is(err, ErrNilURL) || eps != nil {
		t.Errorf("Endpoints(nil) = %v, %v; want ErrNilURL", eps, err)
	}

	body := &closeRecorder{Reader: strings.NewReader("x")}
	resp, err := NewTransport(r, nil).RoundTrip(&http.Request{Method: "POST", Header: http.Header{}, Body: body})
	if !errors.Is(err, ErrNilURL) || resp != nil {
		t.Errorf("RoundTrip(no URL) = %v, %v; want ErrNilURL", resp, err)
	}
	if !body.closed {
		t.Errorf("RoundTrip did not close the body of a request it refused")
	}

	u, _ := url.Parse("http://catalog/x")
	if _, err := (&Transport{}).RoundTrip(&http.Request{Method: "GET", URL: u, Header: http.Header{}}); err == nil {
		t.Errorf("RoundTrip without a Resolver succeeded")
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestPortableName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"db", "db"},
		{"my-db", "my_db"},
		{"my--db", "my_db"},
		{"my__db", "my_db"},
		{"my.-_db", "my_db"},
		{"My-Db", "My_Db"},
		{"-db-", "_db_"},
		{"ü-x", "_x"},
		{"1db", "1db"},
	}
	for _, tt := range tests {
		if got := PortableName(tt.in); got != tt.want {
			t.Errorf("PortableName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Aspire 13.6 deploy targets inject only ConnectionStrings__{alias} (and
// the alias's property variables): every lookup by the logical name finds
// them, the logical name's own variables first.
func TestConnectionPortableAlias(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		conn       string
		wantString string
		wantKey    string
		wantHost   string
		wantPrefix string
	}{
		{"alias only", map[string]string{"ConnectionStrings__my_db": "Host=alias"}, "my-db", "Host=alias", "ConnectionStrings:my_db", "", ""},
		{"doubled separator", map[string]string{"ConnectionStrings__my_db": "Host=alias"}, "my--db", "Host=alias", "ConnectionStrings:my_db", "", ""},
		{"doubled underscore", map[string]string{"CONNECTIONSTRINGS__MY_DB": "Host=alias"}, "my__db", "Host=alias", "ConnectionStrings:my_db", "", ""},
		{"logical name first", map[string]string{"ConnectionStrings__my-db": "Host=logical", "ConnectionStrings__my_db": "Host=alias"}, "my-db", "Host=logical", "ConnectionStrings:my-db", "", ""},
		{"blank logical value falls through", map[string]string{"ConnectionStrings__my-db": " ", "ConnectionStrings__my_db": "Host=alias"}, "my-db", "Host=alias", "ConnectionStrings:my_db", "", ""},
		{"alias properties", map[string]string{"MY_DB_HOST": "h", "MY_DB_PORT": "1"}, "my--db", "", "", "h", "MY_DB_"},
		{"logical properties first", map[string]string{"MY__DB_HOST": "logical", "MY_DB_HOST": "alias"}, "my--db", "", "", "logical", "MY__DB_"},
		{"alias properties with a logical string", map[string]string{"ConnectionStrings__my--db": "Host=s", "MY_DB_HOST": "h"}, "my--db", "Host=s", "ConnectionStrings:my--db", "h", "MY_DB_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := FromMap(tt.env).Connection(tt.conn)
			if err != nil {
				t.Fatal(err)
			}
			if conn.ConnectionString != tt.wantString || conn.ConnectionStringKey != tt.wantKey || conn.Host != tt.wantHost || conn.PropertyPrefix != tt.wantPrefix {
				t.Errorf("Connection(%q) = string %q from %q, host %q from %q; want %q from %q, %q from %q",
					tt.conn, conn.ConnectionString, conn.ConnectionStringKey, conn.Host, conn.PropertyPrefix,
					tt.wantString, tt.wantKey, tt.wantHost, tt.wantPrefix)
			}
		})
	}

	cs, err := FromMap(map[string]string{"MY_DB_URI": "postgres://h/db"}).ConnectionString("my--db")
	if err != nil || cs != "postgres://h/db" {
		t.Errorf("ConnectionString from the alias's URI = %q, %v", cs, err)
	}

	_, err = FromMap(nil).Connection("my--db")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("error = %v, want ErrNotFound", err)
	}
	for _, v := range []string{"ConnectionStrings__my--db", "ConnectionStrings__my_db", "MY__DB_URI", "MY_DB_URI", "MY__DB_HOST", "MY_DB_HOST"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
	_, err = FromMap(map[string]string{"MY_DB_HOST": "h"}).ConnectionString("my-db")
	if err == nil || !strings.Contains(err.Error(), "ConnectionStrings__my-db and ConnectionStrings__my_db") {
		t.Errorf("ConnectionString error = %v, want it to name both variables", err)
	}
	want := []string{"ConnectionStrings__my--db", "ConnectionStrings__my_db", "MY__DB_URI", "MY_DB_URI", "MY__DB_HOST", "MY_DB_HOST"}
	if got := ConnectionVariables("my--db"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ConnectionVariables = %q, want %q", got, want)
	}
	if got := ConnectionVariables("db"); strings.Join(got, " ") != "ConnectionStrings__db DB_URI DB_HOST" {
		t.Errorf("ConnectionVariables(db) = %q", got)
	}
}
