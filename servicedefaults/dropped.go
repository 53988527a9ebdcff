package servicedefaults

import (
	"context"
	"sync"
	"sync/atomic"

	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// exportCounts counts, per signal, what the App's telemetry produced and
// what its exporters delivered, so the shutdown can say how much was lost
// when the collector could not be reached. The SDK drops silently what
// its queues still hold when a shutdown's context ends; counting at both
// ends is how that loss becomes a number.
type exportCounts struct {
	spansEnded, spansExported          atomic.Int64 // sampled spans ended; spans exported
	recordsEmitted, recordsExported    atomic.Int64 // log records handed to the pipeline; exported
	metricPointsFailed, metricFailures atomic.Int64 // data points in failed exports; failed exports

	mu       sync.Mutex
	firstErr error // the first export error, for the shutdown warning
}

// fail remembers err if it is the first export error.
func (c *exportCounts) fail(err error) {
	c.mu.Lock()
	if c.firstErr == nil {
		c.firstErr = err
	}
	c.mu.Unlock()
}

// exported records the outcome of an export of n items: on success n is
// added to delivered, a failure is remembered. It returns err.
func (c *exportCounts) exported(err error, n int, delivered *atomic.Int64) error {
	if err != nil {
		c.fail(err)
	} else {
		delivered.Add(int64(n))
	}
	return err
}

// firstError returns the first export error, or nil.
func (c *exportCounts) firstError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firstErr
}

// dropped returns the spans ended and log records emitted that were not
// exported, and the metric data points in failed exports, so far.
func (c *exportCounts) dropped() (spans, records, points int64) {
	spans = c.spansEnded.Load() - c.spansExported.Load()
	records = c.recordsEmitted.Load() - c.recordsExported.Load()
	return max(spans, 0), max(records, 0), c.metricPointsFailed.Load()
}

// countingSpanProcessor counts the sampled spans that reach the batch
// span processor (which queues only those).
type countingSpanProcessor struct {
	sdktrace.SpanProcessor
	c *exportCounts
}

func (p countingSpanProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if s.SpanContext().IsSampled() {
		p.c.spansEnded.Add(1)
	}
	p.SpanProcessor.OnEnd(s)
}

// countingSpanExporter counts the spans exported.
type countingSpanExporter struct {
	sdktrace.SpanExporter
	c *exportCounts
}

func (e countingSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	return e.c.exported(e.SpanExporter.ExportSpans(ctx, spans), len(spans), &e.c.spansExported)
}

// countingLogProcessor counts the log records handed to the batch log
// processor.
type countingLogProcessor struct {
	sdklog.Processor
	c *exportCounts
}

func (p countingLogProcessor) OnEmit(ctx context.Context, r *sdklog.Record) error {
	p.c.recordsEmitted.Add(1)
	return p.Processor.OnEmit(ctx, r)
}

// countingLogExporter counts the log records exported.
type countingLogExporter struct {
	sdklog.Exporter
	c *exportCounts
}

func (e countingLogExporter) Export(ctx context.Context, records []sdklog.Record) error {
	return e.c.exported(e.Exporter.Export(ctx, records), len(records), &e.c.recordsExported)
}

// countingMetricExporter counts the data points of the failed exports.
// Metrics are cumulative snapshots, not a queue: there is no "ended but
// not exported" count to keep, only collections that did not get through.
type countingMetricExporter struct {
	sdkmetric.Exporter
	c *exportCounts
}

func (e countingMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := e.Exporter.Export(ctx, rm)
	if err != nil {
		e.c.fail(err)
		e.c.metricFailures.Add(1)
		e.c.metricPointsFailed.Add(dataPoints(rm))
	}
	return err
}

// dataPoints counts the data points of rm.
func dataPoints(rm *metricdata.ResourceMetrics) int64 {
	var n int
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n += len(d.DataPoints)
			case metricdata.Sum[int64]:
				n += len(d.DataPoints)
			case metricdata.Sum[float64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[int64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[int64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[float64]:
				n += len(d.DataPoints)
			case metricdata.Summary:
				n += len(d.DataPoints)
			}
		}
	}
	return int64(n)
}
