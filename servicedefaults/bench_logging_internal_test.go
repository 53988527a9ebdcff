package servicedefaults

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// discardProcessor drops every record, so the benchmark measures the
// handlers and the bridge, not an exporter.
type discardProcessor struct{}

func (discardProcessor) OnEmit(context.Context, *sdklog.Record) error           { return nil }
func (discardProcessor) Shutdown(context.Context) error                         { return nil }
func (discardProcessor) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (discardProcessor) ForceFlush(context.Context) error                       { return nil }

// BenchmarkLogBridge measures one record through the OTel log path:
// "bridge" is otelslog's handler alone, "goaspire" the App's (level
// filter, readable durations), each for a record without and with a
// duration attribute. Console output goes to io.Discard in both, which
// is not measured here (it is the same handler).
//
//	go test -run '^$' -bench BenchmarkLogBridge -benchmem ./servicedefaults
func BenchmarkLogBridge(b *testing.B) {
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(discardProcessor{}))
	defer func() { _ = lp.Shutdown(context.Background()) }()
	bare := slog.New(otelslog.NewHandler("bench", otelslog.WithLoggerProvider(lp)))
	h := newLogHandlers(io.Discard, logSettings{json: true, consoleLvl: levelNone, otelLvl: slog.LevelInfo}, lp)
	ours := slog.New(h.handler("bench"))
	records := []struct {
		name string
		log  func(*slog.Logger)
	}{
		{"plain", func(l *slog.Logger) { l.Info("order created", "id", 7, "total", 42.5) }},
		{"duration", func(l *slog.Logger) { l.Info("breaker opened", "destination", "catalog", "break", 5*time.Second) }},
	}
	for _, r := range records {
		for _, side := range []struct {
			name string
			l    *slog.Logger
		}{{"bridge", bare}, {"goaspire", ours}} {
			b.Run(r.name+"/"+side.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					r.log(side.l)
				}
			})
		}
	}
}
