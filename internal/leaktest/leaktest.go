// Package leaktest gathers everything that leaves an App, for tests that
// try to make a secret leave the process: the errors returned to the
// caller, the console logs, the spans, metrics and logs exported over
// OTLP, and the health answers. Each secret is a distinctive string, so a
// leak anywhere is found by substring.
package leaktest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Sink gathers what left App: the errors recorded with Err and ErrText,
// the App's console output, what Receiver received.
type Sink struct {
	App      *servicedefaults.App
	Receiver *otlptest.Receiver

	t    testing.TB
	logs fmt.Stringer
	errs []string
}

// New returns the Sink of app, whose console output logs holds and whose
// telemetry goes to rcv.
func New(t testing.TB, app *servicedefaults.App, logs fmt.Stringer, rcv *otlptest.Receiver) *Sink {
	return &Sink{App: app, Receiver: rcv, t: t, logs: logs}
}

// Err records the text of an error returned to the caller, if any.
func (s *Sink) Err(err error) {
	if err != nil {
		s.errs = append(s.errs, err.Error())
	}
}

// ErrText records text shown to the caller.
func (s *Sink) ErrText(text string) { s.errs = append(s.errs, text) }

// Health returns the App's /health and /alive answers (detailed in
// Development).
func (s *Sink) Health() string {
	var out strings.Builder
	for _, p := range []string{servicedefaults.HealthPath, servicedefaults.AlivePath} {
		rec := httptest.NewRecorder()
		s.App.Handler().ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		out.WriteString(rec.Body.String())
	}
	return out.String()
}

// Check shuts the App down (flushing its telemetry) and fails the test if
// any of secrets appears in what left it, healthOut included.
func (s *Sink) Check(healthOut string, secrets ...string) {
	s.t.Helper()
	if err := s.App.Shutdown(context.Background()); err != nil {
		s.errs = append(s.errs, err.Error())
	}
	var exported strings.Builder
	for _, sp := range s.Receiver.Spans() {
		exported.WriteString(sp.Span.String())
	}
	for _, m := range s.Receiver.Metrics() {
		exported.WriteString(m.Metric.String())
	}
	for _, l := range s.Receiver.Logs() {
		exported.WriteString(l.Record.String())
	}
	outs := map[string]string{
		"errors":         strings.Join(s.errs, "\n"),
		"console logs":   s.logs.String(),
		"exported OTLP":  exported.String(),
		"health reports": healthOut,
	}
	for _, secret := range secrets {
		for where, text := range outs {
			if strings.Contains(text, secret) {
				s.t.Errorf("%s leak %q:\n%s", where, secret, text)
			}
		}
	}
}
