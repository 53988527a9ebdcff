package connstr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseKeyValue(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Pair
	}{
		{"aspire", "Host=localhost;Port=5432;Username=postgres;Password=p@ss;Database=db",
			[]Pair{{"Host", "localhost"}, {"Port", "5432"}, {"Username", "postgres"}, {"Password", "p@ss"}, {"Database", "db"}}},
		{"spaces and trailing separator", "  Host = h ; Port= 1 ; ",
			[]Pair{{"Host", "h"}, {"Port", "1"}}},
		{"double quoted with separator", `Password="a;b=c";Host=h`,
			[]Pair{{"Password", "a;b=c"}, {"Host", "h"}}},
		{"single quoted with doubled quote", `Password='it''s';Host=h`,
			[]Pair{{"Password", "it's"}, {"Host", "h"}}},
		{"escaped equals in key", "a==b=c",
			[]Pair{{"a=b", "c"}}},
		{"value with equals", "Password=a=b",
			[]Pair{{"Password", "a=b"}}},
		{"empty value", "Password=;Host=h",
			[]Pair{{"Password", ""}, {"Host", "h"}}},
		{"duplicate keeps last value", "Host=a;host=b",
			[]Pair{{"Host", "b"}}},
		{"empty", "", nil},
		{"only separators", ";;", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyValue(tt.in)
			if err != nil {
				t.Fatalf("ParseKeyValue(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseKeyValue(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseKeyValueErrors(t *testing.T) {
	tests := []struct {
		name, in, wantMsg string
	}{
		{"no equals", "Host=h;secretpart", "pair 2 has no '='"},
		{"empty key", "=secret", "empty keyword"},
		{"unclosed quote", `Password="secret`, `"Password" has no closing quote`},
		{"text after quote", `Password="a"secret;Host=h`, `after the quoted value of "Password"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyValue(tt.in)
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks a value", err)
			}
		})
	}
}

func TestQuoteValueRoundTrip(t *testing.T) {
	for _, v := range []string{"plain", "a;b", `q"uote`, "it's", " padded ", ""} {
		pairs, err := ParseKeyValue("Password=" + QuoteValue(v) + ";Host=h")
		if err != nil {
			t.Fatalf("value %q: %v", v, err)
		}
		if pairs[0].Value != v {
			t.Errorf("round trip of %q gave %q", v, pairs[0].Value)
		}
	}
}

func TestParseRedis(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Redis
	}{
		{"aspire", "localhost:6379,password=p",
			Redis{Endpoints: []string{"localhost:6379"}, Options: []Pair{{"password", "p"}}}},
		{"several endpoints and options", " a:1 , b:2,ssl=true,abortConnect=false,",
			Redis{Endpoints: []string{"a:1", "b:2"}, Options: []Pair{{"ssl", "true"}, {"abortConnect", "false"}}}},
		{"ipv6", "[::1]:6380",
			Redis{Endpoints: []string{"[::1]:6380"}}},
		{"password with equals", "h,password=a=b",
			Redis{Endpoints: []string{"h"}, Options: []Pair{{"password", "a=b"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRedis(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseRedis(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRedisErrors(t *testing.T) {
	for _, in := range []string{"", "password=secret", "h,=secret"} {
		_, err := ParseRedis(in)
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseRedis(%q) error = %v, want ErrSyntax", in, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseRedis(%q) error leaks a value: %v", in, err)
		}
	}
}

func FuzzParseKeyValue(f *testing.F) {
	for _, s := range []string{
		"Host=localhost;Port=5432;Username=postgres;Password=p;Database=db",
		`Password="a;b";Host='x''y'`,
		"a==b=c;;",
		"=",
		`"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := ParseKeyValue(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			return
		}
		// Rebuilding the string from its pairs must give the same pairs.
		var b strings.Builder
		for _, p := range pairs {
			if p.Key == "" {
				t.Fatalf("empty key from %q", s)
			}
			b.WriteString(strings.ReplaceAll(p.Key, "=", "=="))
			b.WriteByte('=')
			b.WriteString(QuoteValue(p.Value))
			b.WriteByte(';')
		}
		again, err := ParseKeyValue(b.String())
		if err != nil {
			t.Fatalf("re-parsing %q (from %q): %v", b.String(), s, err)
		}
		if len(again) != len(pairs) {
			t.Fatalf("round trip of %q: %d pairs, then %d", s, len(pairs), len(again))
		}
		for i := range pairs {
			if again[i].Value != pairs[i].Value {
				t.Fatalf("round trip of %q: value %d %q became %q", s, i, pairs[i].Value, again[i].Value)
			}
		}
	})
}

func FuzzParseRedis(f *testing.F) {
	for _, s := range []string{"localhost:6379,password=p,ssl=true", "a:1,b:2", ",,=", "[::1]:6379"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRedis(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			return
		}
		if len(r.Endpoints) == 0 {
			t.Fatalf("no endpoints and no error for %q", s)
		}
		for _, e := range r.Endpoints {
			if e == "" || strings.Contains(e, ",") || strings.Contains(e, "=") {
				t.Fatalf("bad endpoint %q from %q", e, s)
			}
		}
	})
}
