package redact

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIsSecretKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"Password", true},
		{"pwd", true},
		{"PSW", true},
		{"ConnectionStrings:db:Password", true},
		{"x-otlp-api-key", true},
		{"ApiKey", true},
		{"AccessToken", true},
		{"Authorization", true},
		{"AccountKey", true},
		{"SharedAccessKey", true},
		{"SharedAccessSignature", true},
		{"sig", true},
		{"Host", false},
		{"Username", false},
		{"Aspire:Npgsql:DisableTracing", false},
		{"Timeout", false},
		{"signal", false},
		{"design", false},
	}
	for _, tt := range tests {
		if got := IsSecretKey(tt.key); got != tt.want {
			t.Errorf("IsSecretKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestValue(t *testing.T) {
	tests := []struct {
		name, key, value, want string
	}{
		{"secret key", "Password", "hunter2", Mask},
		{"secret path", "Aspire:Npgsql:Password", "hunter2", Mask},
		{"plain", "Port", "5432", "5432"},
		{"URL password inside a plain key", "ASPNETCORE_URLS", "http://u:hunter2@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"},
		{"pair inside a plain key", "Other", "Host=h;Password=hunter2", "Host=h;Password=***"},
		{"long value cut", "Host", strings.Repeat("a", 1<<20), strings.Repeat("a", MaxValue) + "…"},
		{"cut at a rune boundary", "Host", strings.Repeat("a", MaxValue-1) + "éé", strings.Repeat("a", MaxValue-1) + "…"},
		{"secret across the cut", "Host", strings.Repeat("a", MaxValue-10) + " u:hunter2@h" + strings.Repeat("b", 1<<20), strings.Repeat("a", MaxValue-10) + " u:***@h" + "bb…"},
		{"secret in a huge value", "Host", "Password=hunter2;" + strings.Repeat("b", 1<<20), "Password=***;" + strings.Repeat("b", MaxValue-len("Password=***;")) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Value(tt.key, tt.value)
			if got != tt.want {
				t.Errorf("Value(%q, %.80q) = %.80q, want %.80q", tt.key, tt.value, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Value returned invalid UTF-8: %q", got)
			}
			if strings.Contains(got, "hunt") {
				t.Errorf("Value leaked (part of) the secret: %q", got)
			}
		})
	}
}

func TestURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://u:hunter2@h:5432/db", "postgres://u:***@h:5432/db"},
		{"redis://:hunter2@h:6379", "redis://:***@h:6379"},
		// The Redis parser reads a lone user-info as the password.
		{"redis://hunter2@h:6379", "redis://***@h:6379"},
		{"rediss://hunter2@h:6380/0", "rediss://***@h:6380/0"},
		{"postgres://app@h/db", "postgres://app@h/db"},
		{"nats://hunter2@n1:4222", "nats://***@n1:4222"},
		{"amqp://app@mq:5672/", "amqp://app@mq:5672/"},
		{"http://h/p?password=hunter2&x=1", "http://h/p?password=%2A%2A%2A&x=1"},
		{"https://acct.blob.core.windows.net/c?sv=2022&sig=hunter2", "https://acct.blob.core.windows.net/c?sig=%2A%2A%2A&sv=2022"},
		{"http://h/p", "http://h/p"},
		{"%zz://bad:hunter2@", Mask},
		{"http://h/p?password=hunter2;x=%zz", "http://h/p?***"},
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

func TestText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"URL password", `dial "postgres://app:hunter2@db:5432/x": refused`, `dial "postgres://app:***@db:5432/x": refused`},
		{"URL query", `GET https://h/x?api_key=hunter2&a=1 failed: 500`, `GET https://h/x?a=1&api_key=%2A%2A%2A failed: 500`},
		{"redis shorthand", `dial redis://hunter2@cache:6379 failed`, `dial redis://***@cache:6379 failed`},
		{"keyword form", `bad Host=h;Password=hunter2;Port=1`, `bad Host=h;Password=***;Port=1`},
		{"pwd", `Server=s;Uid=u;Pwd=hunter2;`, `Server=s;Uid=u;Pwd=***;`},
		{"header pair", `header x-otlp-api-key=hunter2 rejected`, `header x-otlp-api-key=*** rejected`},
		{"colon form", `password: hunter2`, `password: ***`},
		{"colon form in a sentence", `auth failed; password: hunter2; retry`, `auth failed; password: ***; retry`},
		{"JSON", `{"user":"u","password":"hunter2"}`, `{"user":"u","password":"***"}`},
		{"JSON with spaces and escapes", `{"Password": "hun\"ter2", "Port": 1}`, `{"Password": "***", "Port": 1}`},
		{"JSON number", `{"apiKey": 12345}`, `{"apiKey": "***"}`},
		{"Azure SAS", `sv=2022-11-02&ss=b&sig=hunter2%3D&se=2030`, `sv=2022-11-02&ss=b&sig=***&se=2030`},
		{"Azure account key", `DefaultEndpointsProtocol=https;AccountName=a;AccountKey=hunter2==;EndpointSuffix=core.windows.net`, `DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=core.windows.net`},
		{"Service Bus", `Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=hunter2=`, `Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=***`},
		{"bearer", `Authorization: Bearer eyJhbGciOi.hunter2.sig`, `Authorization: ***`},
		{"bearer alone", `sent bearer eyJhbGciOi.hunter2.sig upstream`, `sent bearer *** upstream`},
		{"basic", `Authorization: Basic aHVudGVyMg==`, `Authorization: ***`},
		{"space in value, keyword form", `Host=h;Password=hun ter2;Database=d`, `Host=h;Password=***;Database=d`},
		{"space in value at the end", `Host=h;Password=hun ter2`, `Host=h;Password=***`},
		{"space in value, redis form", `cache:6379,password=hun ter2,ssl=true`, `cache:6379,password=***,ssl=true`},
		{"libpq form", `host=h password=hunter2 dbname=d`, `host=h password=*** dbname=d`},
		{"quoted", `Host=h;Password="hun;ter2";Port=1`, `Host=h;Password=***;Port=1`},
		{"quoted with doubled quote", `Password='hun''ter2';Port=1`, `Password=***;Port=1`},
		{"quoted keyword", `'Password'=hunter2;Port=1`, `'Password'=***;Port=1`},
		{"config path is not a pair", `config key "Aspire:Npgsql:Password": invalid`, `config key "Aspire:Npgsql:Password": invalid`},
		{"user info without a scheme", `invalid URL "http//u:hunter2@h:5000"`, `invalid URL "http//u:***@h:5000"`},
		{"user info in a DSN", `dial app:hunter2@tcp(db:3306)/x`, `dial app:***@tcp(db:3306)/x`},
		{"e-mail is not user info", `sent to ops@example.com: 12:00`, `sent to ops@example.com: 12:00`},
		{"label after a colon", `failed SASL auth: FATAL: password authentication failed`, `failed SASL auth: FATAL: password authentication failed`},
		{"plain", `plain error: connection refused`, `plain error: connection refused`},
		{"no secret key", `Host=h;Port=5432`, `Host=h;Port=5432`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Text(tt.in)
			if got != tt.want {
				t.Errorf("Text(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			for _, s := range []string{"hunter2", "hun ter2", "ter2", "aHVudGVyMg", "12345"} {
				if strings.Contains(got, s) {
					t.Errorf("Text(%q) leaked %q: %q", tt.in, s, got)
				}
			}
		})
	}
}

func TestHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer hunter2"}, "X-Api-Key": {"hunter2"}, "Cookie": {"s=hunter2"}, "Accept": {"text/plain"}}
	got := Header(h)
	for k, vs := range got {
		for _, v := range vs {
			if strings.Contains(v, "hunter2") {
				t.Errorf("Header kept %s: %q", k, v)
			}
		}
	}
	if got.Get("Accept") != "text/plain" {
		t.Errorf("Header dropped Accept: %v", got)
	}
	if h.Get("Authorization") != "Bearer hunter2" {
		t.Errorf("Header modified its input")
	}
}
