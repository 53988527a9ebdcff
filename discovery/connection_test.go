package discovery

import (
	"errors"
	"strings"
	"testing"
)

func TestEnvName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"db", "DB"},
		{"db-primary", "DB_PRIMARY"},
		{"my.api", "MY_API"},
		{"Cache_1", "CACHE_1"},
		{"1db", "_1DB"},
		{"ü-x", "__X"},
	}
	for _, tt := range tests {
		if got := EnvName(tt.in); got != tt.want {
			t.Errorf("EnvName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestConnection(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		conn    string
		wantStr string
		wantErr string
	}{
		{"connection string", map[string]string{"ConnectionStrings__db": "Host=h;Password=hunter2"}, "db", "Host=h;Password=hunter2", ""},
		{"case-insensitive name", map[string]string{"CONNECTIONSTRINGS__DB": "Host=h"}, "db", "Host=h", ""},
		{"name not encoded", map[string]string{"ConnectionStrings__db-primary": "Host=p"}, "db-primary", "Host=p", ""},
		{"uri property", map[string]string{"DB_PRIMARY_URI": "postgres://u:hunter2@h/db"}, "db-primary", "postgres://u:hunter2@h/db", ""},
		{"string beats uri", map[string]string{"ConnectionStrings__db": "Host=s", "DB_URI": "postgres://h"}, "db", "Host=s", ""},
		{"only host", map[string]string{"DB_HOST": "h", "DB_PASSWORD": "hunter2"}, "db", "", "DB_URI are not set"},
		{"nothing", map[string]string{"OTHER_HOST": "h"}, "db", "", "set ConnectionStrings__db, or DB_URI, or DB_HOST and DB_PORT"},
		{"empty name", nil, " ", "", "empty connection name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := FromMap(tt.env)
			got, err := c.ConnectionString(tt.conn)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to say %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error leaks the password: %v", err)
				}
				if tt.name == "nothing" && !errors.Is(err, ErrNotFound) {
					t.Fatalf("error %v is not ErrNotFound", err)
				}
				return
			}
			if err != nil || got != tt.wantStr {
				t.Fatalf("ConnectionString = %q, %v; want %q", got, err, tt.wantStr)
			}
		})
	}
}

func TestConnectionProperties(t *testing.T) {
	c := FromMap(map[string]string{
		"DB_HOST": "h", "DB_PORT": "5432", "DB_USERNAME": "u", "DB_PASSWORD": "hunter2", "DB_DATABASENAME": "d",
	})
	conn, err := c.Connection("db")
	if err != nil {
		t.Fatal(err)
	}
	if conn.Host != "h" || conn.Port != "5432" || conn.Username != "u" || conn.Password != "hunter2" || conn.DatabaseName != "d" {
		t.Errorf("Connection = %+v", conn)
	}
	if s := conn.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "host=h") {
		t.Errorf("String() = %q", s)
	}
}

func TestListenAddress(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    string
		wantErr string
	}{
		{nil, ":8080", ""},
		{map[string]string{"PORT": "5000"}, ":5000", ""},
		{map[string]string{"PORT": "5000", "HTTP_PORTS": "6000"}, ":5000", ""},
		{map[string]string{"HTTP_PORTS": "6000;6001"}, ":6000", ""},
		{map[string]string{"ASPNETCORE_URLS": "https://+:7001;http://+:7000"}, ":7000", ""},
		{map[string]string{"ASPNETCORE_URLS": "http://localhost:7000"}, "localhost:7000", ""},
		{map[string]string{"ASPNETCORE_URLS": "http://*:7000/"}, ":7000", ""},
		{map[string]string{"PORT": "http"}, "", `"PORT"`},
		{map[string]string{"HTTP_PORTS": "70000"}, "", `"HTTP_PORTS"`},
		{map[string]string{"ASPNETCORE_URLS": "https://+:1"}, "", `"ASPNETCORE_URLS"`},
		{map[string]string{"ASPNETCORE_URLS": "localhost"}, "", `"ASPNETCORE_URLS"`},
		{map[string]string{"ASPNETCORE_URLS": "http://[::1"}, "", `"ASPNETCORE_URLS"`},
		{map[string]string{"ASPNETCORE_URLS": "http://"}, "", `"ASPNETCORE_URLS"`},
		{map[string]string{"ASPNETCORE_URLS": "http://localhost"}, "localhost:80", ""},
		{map[string]string{"ASPNETCORE_URLS": "http://[::1]:7000"}, "[::1]:7000", ""},
		{map[string]string{"HTTP_PORTS": ";"}, "", `"HTTP_PORTS"`},
		{map[string]string{"HTTP_PORTS": " , "}, "", `"HTTP_PORTS"`},
	}
	for _, tt := range tests {
		got, err := FromMap(tt.env).ListenAddress()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: error = %v, want one naming %s", tt.env, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: ListenAddress = %q, %v; want %q", tt.env, got, err, tt.want)
		}
	}
}

func TestListenEndpoint(t *testing.T) {
	const cert = "Kestrel:Certificates:Default:Path"
	tests := []struct {
		env     map[string]string
		want    ListenEndpoint
		wantErr string
	}{
		{nil, ListenEndpoint{Addr: ":8080"}, ""},
		{map[string]string{"PORT": "5000"}, ListenEndpoint{Addr: ":5000", Key: "PORT"}, ""},
		{map[string]string{"HTTPS_PORTS": "5001;5002"}, ListenEndpoint{Addr: ":5001", TLS: true, Key: "HTTPS_PORTS"}, ""},
		{map[string]string{"HTTP_PORTS": "5000", "HTTPS_PORTS": "5001"}, ListenEndpoint{Addr: ":5000", Key: "HTTP_PORTS"}, ""},
		{map[string]string{"ASPNETCORE_URLS": "https://+:7001;http://+:7000"}, ListenEndpoint{Addr: ":7000", Key: "ASPNETCORE_URLS"}, ""},
		{map[string]string{"ASPNETCORE_URLS": "https://+:7001;http://+:7000", cert: "c.pem"}, ListenEndpoint{Addr: ":7001", TLS: true, Key: "ASPNETCORE_URLS"}, ""},
		{map[string]string{"ASPNETCORE_URLS": "https://localhost"}, ListenEndpoint{Addr: "localhost:443", TLS: true, Key: "ASPNETCORE_URLS"}, ""},
		{map[string]string{"ASPNETCORE_URLS": "ftp://x:1;http://+:7000"}, ListenEndpoint{Addr: ":7000", Key: "ASPNETCORE_URLS"}, ""},
		{map[string]string{"Kestrel__Endpoints__web__Url": "https://127.0.0.1:9443", "PORT": "5000"},
			ListenEndpoint{Addr: "127.0.0.1:9443", TLS: true, Key: "Kestrel:Endpoints:web:Url", Section: "Kestrel:Endpoints:web"}, ""},
		{map[string]string{"Kestrel__Endpoints__web__Url": "tcp://x:1"}, ListenEndpoint{}, `"Kestrel:Endpoints:web:Url"`},
		{map[string]string{"HTTPS_PORTS": "x"}, ListenEndpoint{}, `"HTTPS_PORTS"`},
		{map[string]string{"ASPNETCORE_URLS": "ftp://x:1"}, ListenEndpoint{}, `"ASPNETCORE_URLS"`},
	}
	for _, tt := range tests {
		got, err := FromMap(tt.env).ListenEndpoint()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: error = %v, want one naming %s", tt.env, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: ListenEndpoint = %+v, %v; want %+v", tt.env, got, err, tt.want)
		}
	}
}
