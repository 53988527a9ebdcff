package servicedefaults

import (
	"context"
	"fmt"

	"github.com/goaspire/goaspire/discovery"
)

// WithConfigSource adds src to the App's configuration
// (discovery.Config.AddSource: above the appsettings files, below the
// environment) before Add reads any setting, so the source can set the
// App's own settings too. Add fails, naming the source, when src cannot
// be loaded. Several sources stack in the order given.
//
// When a source given here has a ReloadInterval, the App reloads its
// configuration (discovery.Config.Watch) until Shutdown, which stops it.
// A failed reload keeps the last good values and is logged once, as a
// warning naming the source, until a reload succeeds again.
//
// Azure Key Vault secrets (integrations/aspireazure.KeyVaultSecrets) are
// such a source.
func WithConfigSource(src discovery.Source) Option {
	return func(o *options) { o.sources = append(o.sources, src) }
}

// addSources layers the WithConfigSource sources onto cfg.
func addSources(ctx context.Context, cfg *discovery.Config, sources []discovery.Source) (*discovery.Config, bool, error) {
	reloads := false
	for _, src := range sources {
		var err error
		if cfg, err = cfg.AddSource(ctx, src); err != nil {
			return nil, false, fmt.Errorf("servicedefaults: %w", err)
		}
		reloads = reloads || src.ReloadInterval > 0
	}
	return cfg, reloads, nil
}

// watchConfig reloads the App's configuration until Shutdown.
func (a *App) watchConfig() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	logger := a.componentLogger("github.com/goaspire/goaspire/discovery")
	go func() {
		defer close(done)
		_ = a.cfg.Watch(ctx, func(err error) {
			logger.Warn("configuration reload failed; keeping the last values", "error", err)
		})
	}()
	a.OnShutdown(func(context.Context) error {
		cancel()
		<-done
		return nil
	})
}
