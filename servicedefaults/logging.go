package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/redact"
)

// Extra slog levels for the .NET levels slog lacks.
const (
	levelTrace    = slog.LevelDebug - 4
	levelCritical = slog.LevelError + 4
	levelNone     = slog.Level(1 << 30)
)

// parseLevel reads a .NET LogLevel name (Trace, Debug, Information,
// Warning, Error, Critical, None) or a slog level name (DEBUG, INFO, WARN,
// ERROR).
func parseLevel(cfg *discovery.Config, key string, def slog.Level) (slog.Level, error) {
	v := strings.TrimSpace(cfg.String(key))
	switch strings.ToLower(v) {
	case "":
		return def, nil
	case "trace":
		return levelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "information", "info":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "critical":
		return levelCritical, nil
	case "none":
		return levelNone, nil
	}
	return def, &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid log level %q (want Trace, Debug, Information, Warning, Error, Critical or None)", redact.Value(key, v))}
}

// logSettings are the logging keys Add reads.
type logSettings struct {
	json                bool
	consoleLvl, otelLvl slog.Level
}

func readLogSettings(cfg *discovery.Config) (logSettings, error) {
	var s logSettings
	var errs []error
	def, err := parseLevel(cfg, "Logging:LogLevel:Default", slog.LevelInfo)
	errs = append(errs, err)
	s.consoleLvl, err = parseLevel(cfg, "Logging:Console:LogLevel:Default", def)
	errs = append(errs, err)
	s.otelLvl, err = parseLevel(cfg, "Logging:OpenTelemetry:LogLevel:Default", def)
	errs = append(errs, err)
	s.json = !cfg.IsDevelopment()
	switch f := strings.ToLower(strings.TrimSpace(cfg.String("Logging:Console:FormatterName"))); f {
	case "":
	case "json":
		s.json = true
	case "simple", "text", "systemd":
		s.json = false
	default:
		errs = append(errs, &discovery.KeyError{Key: "Logging:Console:FormatterName", Err: fmt.Errorf("unknown formatter %q (want json or simple)", redact.Value("Logging:Console:FormatterName", f))})
	}
	return s, errors.Join(errs...)
}

// Instrumentation scopes of the goaspire packages the App logs for. The
// Aspire dashboard shows a record's scope as its Category.
const (
	scopeResilience = "github.com/goaspire/goaspire/resilience"
	scopeHealth     = "github.com/goaspire/goaspire/health"
)

// logHandlers builds the App's slog handlers: one console handler shared
// by every logger, and per instrumentation scope an OTel log bridge, so
// that each component's records carry its own scope.
type logHandlers struct {
	console slog.Handler           // JSON or text, with trace_id/span_id
	lp      otellog.LoggerProvider // nil when logs are not exported
	otelLvl slog.Level
}

// newLogHandlers returns the handlers behind the App's loggers: records
// at or above the console level go to w (JSON or text) with trace_id and
// span_id added from the context, and records at or above the
// OpenTelemetry level go to lp through the otelslog bridge (which carries
// the trace context in the log record itself). A nil lp means logs are not
// exported. Durations are written readably ("2s") in both.
func newLogHandlers(w io.Writer, s logSettings, lp otellog.LoggerProvider) *logHandlers {
	opts := &slog.HandlerOptions{Level: s.consoleLvl, ReplaceAttr: replaceAttr}
	var console slog.Handler
	if s.json {
		console = slog.NewJSONHandler(w, opts)
	} else {
		console = slog.NewTextHandler(w, opts)
	}
	return &logHandlers{console: &traceHandler{base: console, cur: console}, lp: lp, otelLvl: s.otelLvl}
}

// handler returns the handler for records of the instrumentation scope
// named scope: the console, plus the OTel pipeline under that scope.
func (h *logHandlers) handler(scope string) slog.Handler {
	if h.lp == nil {
		return h.console
	}
	bridge := otelslog.NewHandler(scope, otelslog.WithLoggerProvider(h.lp))
	return &fanout{handlers: []slog.Handler{h.console, &levelHandler{Handler: durationHandler{bridge}, min: h.otelLvl}}}
}

// logger returns a logger for the instrumentation scope named scope.
func (h *logHandlers) logger(scope string) *slog.Logger { return slog.New(h.handler(scope)) }

// componentLogger returns the logger a goaspire package gets from the App:
// the App's handlers, under the package's own instrumentation scope.
func (a *App) componentLogger(scope string) *slog.Logger { return a.logs.logger(scope) }

// replaceAttr is the console handlers' ReplaceAttr: the extra levels by
// their .NET names, and durations as Go duration strings ("2s") instead of
// the JSON handler's integer nanoseconds.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
		return a
	}
	return levelNames(groups, a)
}

// levelNames prints the extra levels by their .NET names.
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) != 0 || a.Key != slog.LevelKey {
		return a
	}
	switch lvl, _ := a.Value.Any().(slog.Level); lvl {
	case levelTrace:
		a.Value = slog.StringValue("TRACE")
	case levelCritical:
		a.Value = slog.StringValue("CRITICAL")
	}
	return a
}

// traceHandler adds trace_id and span_id, at the top level, to records
// made in the context of a valid span.
type traceHandler struct {
	base slog.Handler // without any WithAttrs/WithGroup
	cur  slog.Handler // base with ops applied
	ops  []handlerOp
	// grouped is true once a group is open: the trace attributes must then
	// be added below base, not to the record, to stay at the top level.
	grouped bool
}

type handlerOp struct {
	group string
	attrs []slog.Attr
}

func (h *traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.cur.Enabled(ctx, l)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.cur.Handle(ctx, r)
	}
	ids := []slog.Attr{slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String())}
	if !h.grouped {
		r = r.Clone()
		r.AddAttrs(ids...)
		return h.cur.Handle(ctx, r)
	}
	hh := h.base.WithAttrs(ids)
	for _, op := range h.ops {
		if op.group != "" {
			hh = hh.WithGroup(op.group)
		} else {
			hh = hh.WithAttrs(op.attrs)
		}
	}
	return hh.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &traceHandler{base: h.base, cur: h.cur.WithAttrs(attrs),
		ops: append(h.ops[:len(h.ops):len(h.ops)], handlerOp{attrs: attrs}), grouped: h.grouped}
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &traceHandler{base: h.base, cur: h.cur.WithGroup(name),
		ops: append(h.ops[:len(h.ops):len(h.ops)], handlerOp{group: name}), grouped: true}
}

// durationHandler writes duration attributes as Go duration strings
// ("2s"): the OTel log bridge would send them as integer nanoseconds.
type durationHandler struct{ slog.Handler }

func (h durationHandler) Handle(ctx context.Context, r slog.Record) error {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = hasDuration(a.Value)
		return !found
	})
	if !found {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(readableDurations(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h durationHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = readableDurations(a)
	}
	return durationHandler{h.Handler.WithAttrs(out)}
}

func (h durationHandler) WithGroup(name string) slog.Handler {
	return durationHandler{h.Handler.WithGroup(name)}
}

// hasDuration reports whether v, or an attribute in the group v, is a
// duration. A LogValuer is resolved first.
func hasDuration(v slog.Value) bool {
	switch v.Kind() {
	case slog.KindDuration:
		return true
	case slog.KindLogValuer:
		return hasDuration(v.Resolve())
	case slog.KindGroup:
		for _, a := range v.Group() {
			if hasDuration(a.Value) {
				return true
			}
		}
	}
	return false
}

// readableDurations returns a with every duration in it (in groups too)
// turned into its string form.
func readableDurations(a slog.Attr) slog.Attr {
	if !hasDuration(a.Value) {
		return a
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindDuration:
		a.Value = slog.StringValue(v.Duration().String())
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = readableDurations(ga)
		}
		a.Value = slog.GroupValue(out...)
	}
	return a
}

// levelHandler drops records below min.
type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h *levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}

// fanout sends each record to every handler that is enabled for it.
type fanout struct{ handlers []slog.Handler }

func (f *fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f.handlers {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f *fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f.handlers {
		if h.Enabled(ctx, r.Level) {
			// No Clone: the handlers here do not retain r, and the one
			// that adds attributes (traceHandler) clones first.
			if err := h.Handle(ctx, r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (f *fanout) WithAttrs(attrs []slog.Attr) slog.Handler {
	hs := make([]slog.Handler, len(f.handlers))
	for i, h := range f.handlers {
		hs[i] = h.WithAttrs(attrs)
	}
	return &fanout{handlers: hs}
}

func (f *fanout) WithGroup(name string) slog.Handler {
	hs := make([]slog.Handler, len(f.handlers))
	for i, h := range f.handlers {
		hs[i] = h.WithGroup(name)
	}
	return &fanout{handlers: hs}
}
