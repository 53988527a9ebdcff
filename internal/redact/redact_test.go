package redact

import (
	"strings"
	"testing"
)

func TestIsSecretKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"Password", true},
		{"pwd", true},
		{"ConnectionStrings:db:Password", true},
		{"x-otlp-api-key", true},
		{"ApiKey", true},
		{"AccessToken", true},
		{"Authorization", true},
		{"Host", false},
		{"Username", false},
		{"Aspire:Npgsql:DisableTracing", false},
		{"Timeout", false},
	}
	for _, tt := range tests {
		if got := IsSecretKey(tt.key); got != tt.want {
			t.Errorf("IsSecretKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestValue(t *testing.T) {
	if got := Value("Password", "hunter2"); got != Mask {
		t.Errorf("Value(Password) = %q", got)
	}
	if got := Value("Port", "5432"); got != "5432" {
		t.Errorf("Value(Port) = %q", got)
	}
	long := strings.Repeat("a", 100)
	if got := Value("Host", long); len(got) >= len(long) {
		t.Errorf("Value did not shorten a long value: %q", got)
	}
}

func TestURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://u:hunter2@h:5432/db", "postgres://u:***@h:5432/db"},
		{"redis://:hunter2@h:6379", "redis://:***@h:6379"},
		{"http://h/p?password=hunter2&x=1", "http://h/p?password=%2A%2A%2A&x=1"},
		{"http://h/p", "http://h/p"},
		{"%zz://bad:hunter2@", Mask},
	}
	for _, tt := range tests {
		got := URL(tt.in)
		if got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "hunter2") {
			t.Errorf("URL(%q) leaked the secret: %q", tt.in, got)
		}
	}
}
