package servicedefaults_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
)

// TestHandlerPanic: a panicking handler answers 500 with a short
// problem+json body (the message only in Development), is recorded on its
// span (named after the route, status Error, error.type), in the duration
// metric and in one error log carrying the stack and the trace id, and the
// server keeps serving. A panic after the response started cuts the
// connection without a second header; http.ErrAbortHandler aborts without
// a log.
func TestHandlerPanic(t *testing.T) {
	tests := []struct {
		name      string
		env       string // ASPNETCORE_ENVIRONMENT
		telemetry bool
		handler   http.HandlerFunc
		code      int    // 0: the client must see the connection cut
		body      string // in the 500's body
		noBody    string // never in the body
		errorType string // "": no panic record expected
	}{
		{
			name: "string panic in Production", env: "Production", telemetry: true,
			handler: func(http.ResponseWriter, *http.Request) { panic("boom at row 42") },
			code:    500, body: `"status":500`, noBody: "boom", errorType: "panic",
		},
		{
			name: "error panic in Development", env: "Development", telemetry: true,
			handler: func(http.ResponseWriter, *http.Request) {
				panic(&fs.PathError{Op: "open", Path: "/etc/app.conf", Err: fs.ErrNotExist})
			},
			code: 500, body: `"detail":"open /etc/app.conf: file does not exist"`, errorType: "*fs.PathError",
		},
		{
			name: "headers set before the panic are dropped", env: "Production", telemetry: true,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "100000")
				w.Header().Set("Content-Type", "text/html")
				panic("boom")
			},
			code: 500, body: `"title":`, errorType: "panic",
		},
		{
			name: "panic after the response started", env: "Production", telemetry: true,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "1000")
				_, _ = io.WriteString(w, "partial")
				http.NewResponseController(w).Flush()
				panic("boom")
			},
			code: 0, errorType: "panic",
		},
		{
			name: "telemetry off", env: "Production", telemetry: false,
			handler: func(http.ResponseWriter, *http.Request) { panic("boom") },
			code:    500, body: `"status":500`, noBody: "boom", errorType: "panic",
		},
		{
			name: "ErrAbortHandler", env: "Production", telemetry: true,
			handler: func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) },
			code:    0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			values := map[string]string{"ASPNETCORE_ENVIRONMENT": tt.env, "Logging__Console__FormatterName": "json"}
			if tt.telemetry {
				values = exportedAtShutdown(rcv, values)
			}
			mux := http.NewServeMux()
			mux.Handle("GET /panic/{id}", tt.handler)
			mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
			app, logs := newApp(t, values, mux)
			base := serve(t, app)

			resp, err := http.Get(base + "/panic/7")
			var body string
			if err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				body, err = string(b), rerr
			}
			switch {
			case tt.code == 0 && err == nil:
				t.Fatalf("got a complete response %d %q, want the connection cut", resp.StatusCode, body)
			case tt.code != 0 && err != nil:
				t.Fatalf("GET /panic/7: %v, want %d", err, tt.code)
			case tt.code != 0:
				if resp.StatusCode != tt.code || resp.Header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("response = %d %s, want %d application/problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), tt.code)
				}
				if !json.Valid([]byte(body)) || !strings.Contains(body, tt.body) || (tt.noBody != "" && strings.Contains(body, tt.noBody)) {
					t.Errorf("body = %s, want JSON with %s and without %q", body, tt.body, tt.noBody)
				}
			}
			if code, b := get(t, nil, base+"/ok"); code != 200 || b != "ok" {
				t.Fatalf("after the panic, GET /ok = %d %q", code, b)
			}
			if err := app.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}

			console := logs.String()
			if strings.Contains(console, "superfluous") {
				t.Errorf("a second header was written:\n%s", console)
			}
			if n := strings.Count(console, `"msg":"panic serving request"`); tt.errorType == "" && n != 0 || tt.errorType != "" && n != 1 {
				t.Fatalf("console has %d panic records:\n%s", n, console)
			}
			if tt.errorType == "" {
				return
			}
			var rec map[string]any
			for _, l := range strings.Split(console, "\n") {
				if strings.Contains(l, `"msg":"panic serving request"`) {
					if err := json.Unmarshal([]byte(l), &rec); err != nil {
						t.Fatal(err)
					}
				}
			}
			if rec["level"] != "ERROR" || rec["route"] != "/panic/{id}" || rec["exception.type"] != tt.errorType ||
				!strings.Contains(fmt.Sprint(rec["exception.stacktrace"]), "recover_test.go") {
				t.Errorf("panic log = %v", rec)
			}
			if !tt.telemetry {
				return
			}
			if rec["trace_id"] == nil {
				t.Errorf("panic log without trace_id: %v", rec)
			}

			span, ok := rcv.SpanNamed("GET /panic/{id}")
			if !ok {
				t.Fatalf("no span named after the route; spans: %v", spanNames(rcv))
			}
			if route, _ := otlptest.Attr(span.Span.Attributes, "http.route"); route != "/panic/{id}" {
				t.Errorf("http.route = %q", route)
			}
			if et, _ := otlptest.Attr(span.Span.Attributes, "error.type"); et != tt.errorType {
				t.Errorf("span error.type = %q, want %q", et, tt.errorType)
			}
			if span.Span.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("span status = %v, want Error", span.Span.GetStatus())
			}
			if tid := hex.EncodeToString(span.Span.TraceId); rec["trace_id"] != tid {
				t.Errorf("log trace_id %v, span trace id %s", rec["trace_id"], tid)
			}
			var exported int
			for _, l := range rcv.Logs() {
				if l.Record.GetBody().GetStringValue() == "panic serving request" {
					exported++
					if string(l.Record.TraceId) != string(span.Span.TraceId) {
						t.Error("exported panic log not correlated with the span")
					}
				}
			}
			if exported != 1 {
				t.Errorf("%d panic log records exported, want 1", exported)
			}
			m, ok := rcv.MetricNamed("http.server.request.duration")
			if !ok {
				t.Fatal("no http.server.request.duration")
			}
			var recorded bool
			for _, dp := range m.Metric.GetHistogram().GetDataPoints() {
				route, _ := otlptest.Attr(dp.Attributes, "http.route")
				et, _ := otlptest.Attr(dp.Attributes, "error.type")
				if route == "/panic/{id}" && et == tt.errorType && dp.Count == 1 {
					recorded = true
				}
			}
			if !recorded {
				t.Errorf("no duration point for the panicking route with error.type %q: %v", tt.errorType, m.Metric)
			}
		})
	}
}

// TestHandlerKeepsInterfaces: the writer a handler gets still flushes,
// and http.ResponseController reaches the server's writer through it.
func TestHandlerKeepsInterfaces(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			http.Error(w, "not a Flusher", 500)
			return
		}
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, "streamed")
		w.(http.Flusher).Flush()
	})
	app, _ := newApp(t, nil, mux)
	base := serve(t, app)
	if code, body := get(t, nil, base+"/stream"); code != 200 || body != "streamed" {
		t.Errorf("GET /stream = %d %q", code, body)
	}
}
