package servicedefaults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// panicWriter tracks whether the response has started. It passes Flush,
// Hijack, ReadFrom and WriteString on to the server's ResponseWriter and
// unwraps for http.ResponseController.
type panicWriter struct {
	http.ResponseWriter
	wrote bool // the status line is (or may be) on the wire
	abort bool // a panic came after wrote: cut the connection
}

func (w *panicWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *panicWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *panicWriter) WriteString(s string) (int, error) {
	w.wrote = true
	// io.WriteString's own check, made here: this call site only ever
	// sees the server's writer, so the type check stays cached.
	if sw, ok := w.ResponseWriter.(io.StringWriter); ok {
		return sw.WriteString(s)
	}
	return w.ResponseWriter.Write([]byte(s))
}

func (w *panicWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r) // sendfile for the server's writer
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (w *panicWriter) Flush() {
	w.wrote = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *panicWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.wrote = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the server's ResponseWriter, for http.ResponseController.
func (w *panicWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Semantic-convention keys for a recovered panic.
const (
	errorTypeKey     = attribute.Key("error.type")
	exceptionType    = attribute.Key("exception.type")
	exceptionMessage = attribute.Key("exception.message")
	exceptionStack   = attribute.Key("exception.stacktrace")
)

// handlePanic handles a panic p recovered from a handler serving r, as
// ASP.NET Core's exception handler does: the span records it (status
// Error, error.type, an exception event), the duration metric gets
// error.type, one error log carries the stack and the trace, and the
// client gets a 500 with a short problem+json body (the panic message
// only in Development), unless the response had started: then the
// connection is cut. http.ErrAbortHandler goes on up untouched (after the
// span has ended and the metrics are recorded).
func (a *App) handlePanic(st *reqState, r *http.Request, p any) {
	if p == http.ErrAbortHandler {
		st.abort = true // passed on up once the span and metrics are done
		return
	}
	stack := string(debug.Stack())
	typ := "panic"
	if err, ok := p.(error); ok {
		typ = fmt.Sprintf("%T", err)
	}
	msg := a.tel.scrub(fmt.Sprint(p))
	ctx := r.Context()
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.AddEvent("exception", trace.WithAttributes(
			exceptionType.String(typ), exceptionMessage.String(msg), exceptionStack.String(stack)))
		span.SetAttributes(errorTypeKey.String(typ))
		span.SetStatus(codes.Error, msg)
	}
	st.errType = typ // for the duration metric
	where := st.route
	if where == "" {
		where = r.URL.Path
	}
	a.logger.ErrorContext(ctx, "panic serving request",
		"method", r.Method, "route", where,
		string(exceptionType), typ, string(exceptionMessage), msg, string(exceptionStack), stack)

	if st.wrote {
		st.abort = true
		return
	}
	problem := struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Status  int    `json:"status"`
		Detail  string `json:"detail,omitempty"`
		TraceID string `json:"traceId,omitempty"`
	}{
		Type:   "https://tools.ietf.org/html/rfc9110#section-15.6.1",
		Title:  "An error occurred while processing your request.",
		Status: http.StatusInternalServerError,
	}
	if a.cfg.IsDevelopment() {
		problem.Detail = msg
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		problem.TraceID = sc.TraceID().String()
	}
	body, _ := json.Marshal(problem)
	w := http.ResponseWriter(st)
	hdr := w.Header()
	clear(hdr) // what the handler set was for the response it did not make
	hdr.Set("Content-Type", "application/problem+json")
	hdr.Set("Cache-Control", "no-store, no-cache")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(body)
}
