package discovery_test

import (
	"fmt"
	"testing"

	"github.com/goaspire/goaspire/discovery"
)

// BenchmarkLookup measures a key read through a section, the path every
// typed getter takes.
func BenchmarkLookup(b *testing.B) {
	m := map[string]string{}
	for i := range 200 {
		m[fmt.Sprintf("Section%d:Key%d", i%10, i)] = "value"
	}
	m["Aspire:Npgsql:db:Timeout"] = "00:00:30"
	cfg := discovery.FromMap(m).Section("Aspire:Npgsql:db")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := cfg.Lookup("Timeout"); !ok {
			b.Fatal("not found")
		}
	}
}
