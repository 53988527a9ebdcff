package testserver

import (
	"context"
	"strings"
	"testing"
)

func TestNATSLifecycle(t *testing.T) {
	n := NewNATS(t)
	ctx := context.Background()
	if err := n.ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if strings.Contains(n.String(), n.Password()) || strings.Contains(n.GoString(), n.Password()) {
		t.Error("String shows the password")
	}
	if !strings.HasPrefix(n.URL(), "nats://goaspire:") {
		t.Errorf("URL = %s", n.URL())
	}
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"kill", n.Kill},
		{"start after kill", func() error { return n.Start(ctx) }},
		{"stop", func() error { return n.Stop(ctx) }},
		{"start after stop", func() error { return n.Start(ctx) }},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	if err := n.ping(ctx); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	wrong := &NATS{server: server{password: "wrong"}, port: n.Port()}
	if err := wrong.ping(ctx); err == nil {
		t.Error("a wrong password was accepted")
	}
}

func TestNATSTLS(t *testing.T) {
	n := NewNATS(t, WithNATSTLS())
	if err := n.ping(context.Background()); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
	if !strings.HasPrefix(n.URL(), "tls://") || n.CACertFile() == "" || n.CACertPool() == nil {
		t.Errorf("URL %s, CA file %q", n.URL(), n.CACertFile())
	}
	plain := &NATS{server: server{password: n.Password()}, port: n.Port()}
	if err := plain.ping(context.Background()); err == nil {
		t.Error("a plain connection was accepted by a TLS server")
	}
}
