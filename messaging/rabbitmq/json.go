package rabbitmq

import (
	"context"
	"encoding/json"
	"fmt"
)

// PublishJSON publishes v encoded as JSON (content type
// application/json), as Publish does; m supplies the other properties and
// its Body is ignored.
func PublishJSON[T any](ctx context.Context, c *Client, exchange, key string, v T, m Message) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("rabbitmq %q: publish to %q: encode %T: %w", c.name, destination(exchange, key), v, err)
	}
	m.Body = body
	m.ContentType = "application/json"
	return c.Publish(ctx, exchange, key, m)
}

// ConsumeJSON consumes queue as Consume does, decoding each body as JSON
// into a T for handler. A body that does not decode is rejected at once
// (see Permanent): no attempt would decode it.
func ConsumeJSON[T any](ctx context.Context, c *Client, queue string, opts ConsumeOptions, handler func(ctx context.Context, v T, d Delivery) error) error {
	return c.Consume(ctx, queue, opts, func(ctx context.Context, d Delivery) error {
		var v T
		if err := json.Unmarshal(d.Body, &v); err != nil {
			return Permanent(fmt.Errorf("decode %T: %w", v, err))
		}
		return handler(ctx, v, d)
	})
}
