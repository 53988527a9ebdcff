package redisevents_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/goaspire/goaspire/messaging/redisevents"
)

var (
	_ redisevents.PublishOption   = redisevents.WithTracerProvider(nil)
	_ redisevents.SubscribeOption = redisevents.WithTracerProvider(nil)
	_ redisevents.PublishOption   = redisevents.WithPropagator(nil)
	_ redisevents.SubscribeOption = redisevents.WithPropagator(nil)
	_ redisevents.CodecOption     = redisevents.WithPropagator(nil)
	_ redisevents.PublishOption   = redisevents.WithRawPayload()
	_ redisevents.SubscribeOption = redisevents.WithLogger(nil)
	_ redisevents.SubscribeOption = redisevents.WithHealthCheckInterval(0)
)

// TestOptionsCompileOnlyWhereTheyApply checks, with the compiler's rule
// (the option's static type assignable to the function's variadic
// parameter), that each option can be passed exactly to the functions it
// configures, as the package documentation lists them.
func TestOptionsCompileOnlyWhereTheyApply(t *testing.T) {
	funcs := map[string]any{
		"Publish":     redisevents.Publish,
		"PublishJSON": redisevents.PublishJSON,
		"Subscribe":   redisevents.Subscribe,
		"PSubscribe":  redisevents.PSubscribe,
		"Encode":      redisevents.Encode,
		"Decode":      redisevents.Decode,
	}
	tests := []struct {
		option  string
		fn      any
		applies []string
	}{
		{"WithTracerProvider", redisevents.WithTracerProvider, []string{"Publish", "PublishJSON", "Subscribe", "PSubscribe"}},
		{"WithPropagator", redisevents.WithPropagator, []string{"Publish", "PublishJSON", "Subscribe", "PSubscribe", "Encode", "Decode"}},
		{"WithRawPayload", redisevents.WithRawPayload, []string{"Publish", "PublishJSON"}},
		{"WithLogger", redisevents.WithLogger, []string{"Subscribe", "PSubscribe"}},
		{"WithHealthCheckInterval", redisevents.WithHealthCheckInterval, []string{"Subscribe", "PSubscribe"}},
	}
	for _, tt := range tests {
		opt := reflect.TypeOf(tt.fn).Out(0)
		for name, fn := range funcs {
			ft := reflect.TypeOf(fn)
			if !ft.IsVariadic() {
				t.Fatalf("%s takes no options", name)
			}
			param := ft.In(ft.NumIn() - 1).Elem()
			if got, want := opt.AssignableTo(param), slices.Contains(tt.applies, name); got != want {
				t.Errorf("%s(%s) compiles: %v, want %v", name, tt.option, got, want)
			}
		}
	}
}
