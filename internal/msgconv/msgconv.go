// Package msgconv holds the OpenTelemetry messaging conventions' span
// attributes that every goaspire messaging client records the same way.
package msgconv

import "go.opentelemetry.io/otel/attribute"

// Append appends to attrs the attributes of one messaging operation:
// messaging.system, the operation under both its older name
// (messaging.operation, which the Aspire dashboard reads) and the current
// ones (messaging.operation.name and messaging.operation.type: "send" for a
// publish, "process" for a handler), and messaging.destination.name.
func Append(attrs []attribute.KeyValue, system, operation, operationType, destination string) []attribute.KeyValue {
	return append(attrs,
		attribute.String("messaging.system", system),
		attribute.String("messaging.operation", operation),
		attribute.String("messaging.operation.name", operation),
		attribute.String("messaging.operation.type", operationType),
		attribute.String("messaging.destination.name", destination),
	)
}
