package discovery

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func load(t *testing.T, files map[string]string, env ...string) *Config {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	c, err := Load(WithFS(fsys), WithEnviron(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoadLayers(t *testing.T) {
	files := map[string]string{
		"appsettings.json": `{
			"Logging": {"LogLevel": {"Default": "Information"}},
			"Aspire": {"Npgsql": {"DisableHealthChecks": false, "Timeout": "00:00:15"}},
			"Hosts": ["a", "b"],
			"Nothing": null,
			"Count": 3
		}`,
		"appsettings.Development.json": `{"Logging": {"LogLevel": {"Default": "Debug"}}, "Count": 4}`,
		"appsettings.Staging.json":     `{"Count": 99}`,
	}
	c := load(t, files,
		"DOTNET_ENVIRONMENT=Development",
		"ASPIRE__NPGSQL__DISABLEHEALTHCHECKS=true",
		"ConnectionStrings__db=Host=h",
		"CUSTOMCONNSTR_legacy=Host=l",
	)
	tests := []struct{ key, want string }{
		{"Logging:LogLevel:Default", "Debug"},         // environment file wins over base
		{"logging:loglevel:default", "Debug"},         // case-insensitive
		{"Logging__LogLevel__Default", "Debug"},       // __ is :
		{"Aspire:Npgsql:DisableHealthChecks", "true"}, // environment variable wins over files
		{"Aspire:Npgsql:Timeout", "00:00:15"},         // kept from base
		{"Hosts:1", "b"},                              // arrays by index
		{"Count", "4"},                                // numbers as text
		{"Nothing", ""},                               // null as empty
		{"ConnectionStrings:db", "Host=h"},            // plain variable
		{"ConnectionStrings:legacy", "Host=l"},        // Azure prefix
	}
	for _, tt := range tests {
		got, ok := c.Lookup(tt.key)
		if !ok || got != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.key, got, ok, tt.want)
		}
	}
	if c.Environment() != "Development" || !c.IsDevelopment() {
		t.Errorf("Environment() = %q", c.Environment())
	}
	if _, ok := c.Lookup("Missing"); ok {
		t.Error("Lookup(Missing) found a value")
	}
}

func TestLoadInvalidJSONNamesFile(t *testing.T) {
	for _, body := range []string{`{"a": `, `[1,2]`} {
		_, err := Load(WithFS(fstest.MapFS{"appsettings.json": {Data: []byte(body)}}), WithEnviron(nil))
		if err == nil || !strings.Contains(err.Error(), "appsettings.json") {
			t.Errorf("Load(%q) error = %v, want one naming appsettings.json", body, err)
		}
	}
}

func TestLoadFromDir(t *testing.T) {
	c, err := Load(WithDir(t.TempDir()), WithEnviron([]string{"A=1"}), WithValues(map[string]string{"B__C": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.String("A") != "1" || c.String("B:C") != "2" {
		t.Errorf("got A=%q B:C=%q", c.String("A"), c.String("B:C"))
	}
}

func TestEnvironmentName(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{nil, "Production"},
		{[]string{"ASPNETCORE_ENVIRONMENT=Staging"}, "Staging"},
		{[]string{"ASPNETCORE_ENVIRONMENT=Staging", "DOTNET_ENVIRONMENT=Development"}, "Development"},
		{[]string{"DOTNET_ENVIRONMENT= "}, "Production"},
	}
	for _, tt := range tests {
		c := load(t, nil, tt.env...)
		if got := c.Environment(); got != tt.want {
			t.Errorf("env %v: Environment() = %q, want %q", tt.env, got, tt.want)
		}
	}
	if (&Config{}).Environment() != Production || (*Config)(nil).Environment() != Production {
		t.Error("zero Config is not in Production")
	}
}

func TestTypedGetters(t *testing.T) {
	c := FromMap(map[string]string{
		"S:Int": "42", "S:BadInt": "4x2",
		"S:Bool": "True", "S:BadBool": "maybe",
		"S:Dur": "00:00:30", "S:GoDur": "1m30s", "S:BadDur": "30",
		"S:Float": "0.1", "S:BadFloat": "NaN",
		"S:Password": "hunter2",
		"S:Empty":    "",
	})
	s := c.Section("s")
	if n, err := s.Int("Int", 0); err != nil || n != 42 {
		t.Errorf("Int = %d, %v", n, err)
	}
	if n, err := s.Int("Missing", 7); err != nil || n != 7 {
		t.Errorf("Int default = %d, %v", n, err)
	}
	if n, err := s.Int("Empty", 7); err != nil || n != 7 {
		t.Errorf("Int empty = %d, %v", n, err)
	}
	if b, err := s.Bool("Bool", false); err != nil || !b {
		t.Errorf("Bool = %v, %v", b, err)
	}
	if d, err := s.Duration("Dur", 0); err != nil || d != 30*time.Second {
		t.Errorf("Duration = %v, %v", d, err)
	}
	if d, err := s.Duration("GoDur", 0); err != nil || d != 90*time.Second {
		t.Errorf("Duration = %v, %v", d, err)
	}
	if f, err := s.Float("Float", 0); err != nil || f != 0.1 {
		t.Errorf("Float = %v, %v", f, err)
	}
	errs := []struct {
		name string
		err  error
		key  string
	}{
		{"int", second(s.Int("BadInt", 0)), "s:BadInt"},
		{"bool", second(s.Bool("BadBool", false)), "s:BadBool"},
		{"duration", second(s.Duration("BadDur", 0)), "s:BadDur"},
		{"float", second(s.Float("BadFloat", 0)), "s:BadFloat"},
		{"secret", second(s.Int("Password", 0)), "s:Password"},
	}
	for _, e := range errs {
		var ke *KeyError
		if !errors.As(e.err, &ke) || ke.Key != e.key {
			t.Errorf("%s: error %v does not name key %q", e.name, e.err, e.key)
		}
		if e.err != nil && strings.Contains(e.err.Error(), "hunter2") {
			t.Errorf("%s: error leaks the secret: %v", e.name, e.err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"00:00:30", 30 * time.Second, true},
		{"00:01", time.Minute, true},
		{"01:02:03", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"1.02:03:04", 26*time.Hour + 3*time.Minute + 4*time.Second, true},
		{"00:00:00.5", 500 * time.Millisecond, true},
		{"00:00:00.0000001", 100 * time.Nanosecond, true},
		{"-00:00:05", -5 * time.Second, true},
		{"250ms", 250 * time.Millisecond, true},
		{"0", 0, true},
		{"30", 0, false},
		{"", 0, false},
		{"24:00:00", 0, false},
		{"00:60:00", 0, false},
		{"00:00:00.12345678", 0, false},
		{"a:b:c", 0, false},
		{"1:2:3:4", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestSectionChildren(t *testing.T) {
	c := FromMap(map[string]string{
		"ConnectionStrings__db":        "x",
		"ConnectionStrings__Cache":     "y",
		"ConnectionStrings__db__extra": "z",
		"Other":                        "w",
	})
	got := c.Section("connectionstrings").Children()
	if strings.Join(got, ",") != "Cache,db" {
		t.Errorf("Children = %v", got)
	}
	if c.Section("ConnectionStrings").Path() != "ConnectionStrings" {
		t.Errorf("Path = %q", c.Section("ConnectionStrings").Path())
	}
	if !c.Exists("ConnectionStrings") || c.Exists("Nope") {
		t.Error("Exists is wrong")
	}
}

func FuzzLoadJSON(f *testing.F) {
	for _, s := range []string{`{"a":{"b":[1,"x",null,true]}}`, `{}`, `{"A":1,"a":2}`, `[]`, `{"k":{"":""}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c, err := Load(WithFS(fstest.MapFS{"appsettings.json": {Data: []byte(body)}}), WithEnviron(nil))
		if err != nil {
			if !strings.Contains(err.Error(), "appsettings.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, k := range c.Children() {
			c.Section(k).Children()
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"00:00:30", "1.02:03:04.1234567", "-00:01", "30s", "30", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && strings.Contains(s, ":") && !strings.HasPrefix(strings.TrimSpace(s), "-") && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative without a sign", s, d)
		}
	})
}
