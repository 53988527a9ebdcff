package main

import (
	"encoding/hex"
	"maps"
	"slices"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
)

// faultSlack extends each deliberate failure: a span started just before
// the system was seen to recover may still end in error (a retry already
// under way, a background check that ran in the last instant).
const faultSlack = 2 * time.Second

// checkTelemetry checks what the services exported during the scenario,
// the way the Aspire dashboard reads it:
//
//   - the first write through the gateway (gateway → catalog → Postgres
//     and Redis) is one trace;
//   - no span has status Error unless it started during one of the
//     scenario's deliberate failures;
//   - every database span carries db.system (the dashboard's label), and
//     a statement is one span (no child span repeating its parent's SQL);
//   - log records come from at least three components, each with its own
//     instrumentation scope (the dashboard's Category).
func checkTelemetry(t *testing.T, rcv *otlptest.Receiver, faults []fault) {
	t.Helper()
	spans := rcv.Spans()
	if len(spans) == 0 {
		t.Fatal("no span received")
	}
	byTrace := map[string][]otlptest.Span{}
	for _, s := range spans {
		id := hex.EncodeToString(s.Span.TraceId)
		byTrace[id] = append(byTrace[id], s)
	}

	// The first PUT through the gateway: its server span starts the trace.
	var first *otlptest.Span
	for i, s := range spans {
		if serviceName(s) == "gateway" && s.Span.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Span.Name == "PUT /api/products/{id}" {
			if first == nil || s.Span.StartTimeUnixNano < first.Span.StartTimeUnixNano {
				first = &spans[i]
			}
		}
	}
	if first == nil {
		t.Fatalf("no gateway server span for PUT /api/products/{id}; spans: %v", names(spans))
	}
	trace := byTrace[hex.EncodeToString(first.Span.TraceId)]
	have := map[string]bool{}
	for _, s := range trace {
		have["service "+serviceName(s)] = true
		if v, ok := otlptest.Attr(s.Span.Attributes, "db.system"); ok {
			have["db "+v] = true
		}
	}
	for _, want := range []string{"service gateway", "service catalog", "db postgresql", "db redis"} {
		if !have[want] {
			t.Errorf("the PUT's trace has no %s: %v", want, names(trace))
		}
	}

	// during names the deliberate failure a span started in: the one
	// whose window holds it, else one whose slack does.
	during := func(ns uint64) string {
		at := time.Unix(0, int64(ns))
		for _, slack := range []time.Duration{0, faultSlack} {
			for _, f := range faults {
				end := f.to
				if end.IsZero() {
					end = time.Now()
				}
				if !at.Before(f.from) && !at.After(end.Add(slack)) {
					return f.name
				}
			}
		}
		return ""
	}
	var errorsInFaults int
	for _, s := range spans {
		if s.Span.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			if during(s.Span.StartTimeUnixNano) == "" {
				t.Errorf("%s span %q has status Error outside the deliberate failures: %s",
					serviceName(s), s.Span.Name, s.Span.GetStatus().GetMessage())
			} else {
				errorsInFaults++
				root := ""
				if len(s.Span.ParentSpanId) == 0 {
					root = " (root)"
				}
				t.Logf("during %s: %s span %q%s in Error: %s", during(s.Span.StartTimeUnixNano), serviceName(s), s.Span.Name, root, s.Span.GetStatus().GetMessage())
			}
		}
		_, hasName := otlptest.Attr(s.Span.Attributes, "db.system.name")
		sys, hasSystem := otlptest.Attr(s.Span.Attributes, "db.system")
		if hasName && (!hasSystem || sys == "") {
			t.Errorf("%s database span %q has no db.system", serviceName(s), s.Span.Name)
		}
	}
	byID := map[string]otlptest.Span{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.Span.SpanId)] = s
	}
	for _, s := range spans {
		sql, ok := otlptest.Attr(s.Span.Attributes, "db.query.text")
		if !ok {
			continue
		}
		if p, ok := byID[hex.EncodeToString(s.Span.ParentSpanId)]; ok {
			if psql, _ := otlptest.Attr(p.Span.Attributes, "db.query.text"); psql == sql {
				t.Errorf("%s span %q repeats its parent's statement %q", serviceName(s), s.Span.Name, sql)
			}
		}
	}
	if errorsInFaults == 0 && len(faults) > 0 {
		t.Error("no Error span during the deliberate failures: the check would not see one")
	}

	scopes := map[string]bool{}
	for _, l := range rcv.Logs() {
		scopes[l.Scope.GetName()] = true
	}
	if len(scopes) < 3 {
		t.Errorf("log records carry %d scope names, want at least 3: %v", len(scopes), scopes)
	}
	t.Logf("telemetry: %d spans in %d traces, %d during deliberate failures in Error; log scopes %v",
		len(spans), len(byTrace), errorsInFaults, slices.Sorted(maps.Keys(scopes)))
}

func serviceName(s otlptest.Span) string { return otlptest.ResourceAttr(s.Resource, "service.name") }

func names(spans []otlptest.Span) []string {
	out := make([]string, 0, len(spans))
	for _, s := range spans {
		out = append(out, serviceName(s)+":"+s.Span.Name)
	}
	return out
}
