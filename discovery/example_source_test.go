package discovery_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

// A configuration source (a vault, a configuration service) layered above
// the appsettings files and below the environment, whose values are
// secrets and are loaded again every minute.
func ExampleConfig_AddSource() {
	ctx := context.Background()
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__store": "https://store.example/",
		"Features__Beta":           "on", // the environment wins over the source
	})
	store := discovery.Source{
		Name:           "example store",
		Secret:         true,
		ReloadInterval: time.Minute,
		Load: func(ctx context.Context, cfg *discovery.Config) (map[string]string, error) {
			// A real source would call cfg.ConnectionString("store") and
			// read the store there.
			return map[string]string{"ApiKeys:External": "k-123", "Features:Beta": "off"}, nil
		},
	}
	cfg, err := cfg.AddSource(ctx, store)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.String("ApiKeys:External"), cfg.String("Features:Beta"), cfg.IsSecret("ApiKeys:External"))

	// Reload every source on its interval until ctx ends (the App does
	// this for the sources given with servicedefaults.WithConfigSource).
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = cfg.Watch(ctx, func(err error) { log.Printf("configuration reload: %v", err) })
	}()
	// Output: k-123 on true
}
