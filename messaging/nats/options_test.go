package natsmsg_test

import (
	"reflect"
	"slices"
	"testing"

	natsmsg "github.com/goaspire/goaspire/messaging/nats"
)

var (
	_ natsmsg.PublishOption   = natsmsg.WithTracerProvider(nil)
	_ natsmsg.SubscribeOption = natsmsg.WithTracerProvider(nil)
	_ natsmsg.PublishOption   = natsmsg.WithPropagator(nil)
	_ natsmsg.SubscribeOption = natsmsg.WithPropagator(nil)
	_ natsmsg.SubscribeOption = natsmsg.WithLogger(nil)
)

// TestOptionsCompileOnlyWhereTheyApply checks, with the compiler's rule
// (the option's static type assignable to the function's variadic
// parameter), that each option can be passed exactly to the helpers it
// configures, as the package documentation lists them.
func TestOptionsCompileOnlyWhereTheyApply(t *testing.T) {
	funcs := map[string]any{
		"Publish":             natsmsg.Publish,
		"PublishMsg":          natsmsg.PublishMsg,
		"PublishJetStream":    natsmsg.PublishJetStream,
		"PublishJetStreamMsg": natsmsg.PublishJetStreamMsg,
		"Subscribe":           natsmsg.Subscribe,
		"QueueSubscribe":      natsmsg.QueueSubscribe,
		"ConsumeJetStream":    natsmsg.ConsumeJetStream,
	}
	all := []string{"Publish", "PublishMsg", "PublishJetStream", "PublishJetStreamMsg", "Subscribe", "QueueSubscribe", "ConsumeJetStream"}
	tests := []struct {
		option  string
		fn      any
		applies []string
	}{
		{"WithTracerProvider", natsmsg.WithTracerProvider, all},
		{"WithPropagator", natsmsg.WithPropagator, all},
		{"WithLogger", natsmsg.WithLogger, []string{"Subscribe", "QueueSubscribe", "ConsumeJetStream"}},
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
