package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Source is a layer of configuration read from a store other than files
// and the environment: a secret vault such as Azure Key Vault
// (integrations/aspireazure) or a configuration service. Config.AddSource
// places it above the appsettings files and key-per-file directories and
// below environment variables (and WithValues): a variable set for one
// deployment overrides a secret shared by all of them.
//
// .NET differs here: builder.Configuration.AddAzureKeyVaultSecrets adds
// its provider after the host's environment variables and command line,
// so there the vault wins over them. goaspire keeps the environment on
// top, as the other layers do.
type Source struct {
	// Name names the source in errors and logs ("Azure Key Vault secrets
	// (https://shop.vault.azure.net/)"). It must not hold a secret.
	Name string
	// Secret marks every value of the source as a secret: Config's errors
	// and IsSecret treat its keys as secrets whatever their names.
	Secret bool
	// ReloadInterval is how often Config.Watch loads the source again; 0
	// loads it once.
	ReloadInterval time.Duration
	// Load returns the source's values, keys separated by ':' (or "__").
	// cfg is the configuration as it is when Load is called: every other
	// layer, the sources added before this one and, on a reload, this
	// source's current values. An error must name what failed (the store,
	// the entry) and never a value.
	Load func(ctx context.Context, cfg *Config) (map[string]string, error)
}

// SourceError reports a Source that could not be loaded.
type SourceError struct {
	// Source is the source's Name.
	Source string
	// Err says what went wrong.
	Err error
}

// Error implements error.
func (e *SourceError) Error() string {
	return fmt.Sprintf("configuration source %s: %v", e.Source, e.Err)
}

// Unwrap returns the underlying error.
func (e *SourceError) Unwrap() error { return e.Err }

// AddSource loads src and returns a configuration with its values layered
// above the appsettings files and key-per-file directories and below the
// environment variables of c (see Source). c itself does not change.
// Sources added one after another stack in that order, the later above.
//
// The returned Config (and its sections) changes only when Reload or
// Watch loads its sources again. If src fails to load, AddSource returns
// a *SourceError.
func (c *Config) AddSource(ctx context.Context, src Source) (*Config, error) {
	if src.Load == nil {
		return nil, &SourceError{Source: src.Name, Err: errors.New("no Load function")}
	}
	if src.ReloadInterval < 0 {
		return nil, &SourceError{Source: src.Name, Err: fmt.Errorf("negative ReloadInterval %v", src.ReloadInterval)}
	}
	base := c.root()
	if base.data == nil {
		base = FromMap(nil)
	}
	values, err := loadSource(ctx, src, base)
	if err != nil {
		return nil, err
	}
	old := base.data
	d := &configData{
		below:       old.below,
		above:       old.above,
		environment: old.environment,
		sources:     append(old.sources[:len(old.sources):len(old.sources)], src),
	}
	prev := old.state.Load().sourceValues
	d.state.Store(d.merge(append(prev[:len(prev):len(prev)], values)))
	prefix := ""
	if c != nil {
		prefix = c.prefix
	}
	return &Config{prefix: prefix, data: d}, nil
}

// loadSource calls src.Load and turns its map into pairs in a stable
// order.
func loadSource(ctx context.Context, src Source, cfg *Config) ([][2]string, error) {
	m, err := src.Load(ctx, cfg)
	if err != nil {
		return nil, &SourceError{Source: src.Name, Err: err}
	}
	pairs := make([][2]string, 0, len(m))
	for k, v := range m {
		if k = strings.ReplaceAll(k, "__", ":"); k != "" {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	return pairs, nil
}

// Sources returns the names of the sources added to c, in order.
func (c *Config) Sources() []string {
	if c == nil || c.data == nil {
		return nil
	}
	names := make([]string, len(c.data.sources))
	for i, s := range c.data.sources {
		names[i] = s.Name
	}
	return names
}

// Reload loads every source of c again and swaps the new values in: the
// Config and all its sections see every new value at once, never a mix.
// Files, directories and the environment are not read again. A source
// that fails keeps its previous values while the others take their new
// ones; the error joins a *SourceError for each failure.
func (c *Config) Reload(ctx context.Context) error {
	return c.reload(ctx, func(int) bool { return true })
}

// reload loads again the sources that pick chooses.
func (c *Config) reload(ctx context.Context, pick func(i int) bool) error {
	if c == nil || c.data == nil || len(c.data.sources) == 0 {
		return nil
	}
	d := c.data
	d.reload.Lock()
	defer d.reload.Unlock()
	cur := d.state.Load()
	next := append([][][2]string(nil), cur.sourceValues...)
	root := c.root()
	var errs []error
	changed := false
	for i, src := range d.sources {
		if !pick(i) {
			continue
		}
		values, err := loadSource(ctx, src, root)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[i], changed = values, true
	}
	if changed {
		d.state.Store(d.merge(next))
	}
	return errors.Join(errs...)
}

// Watch reloads each source of c that has a ReloadInterval that often,
// until ctx is done, then returns ctx's error; it returns nil at once when
// no source reloads. A failed reload keeps the source's previous values;
// onError (if not nil) receives the *SourceError of the first failure in
// a row of a source, not those that follow until a reload succeeds, so a
// store that stays down is reported once. Run Watch in its own goroutine:
//
//	ctx, stop := context.WithCancel(ctx)
//	defer stop()
//	go cfg.Watch(ctx, func(err error) { logger.Warn("config reload", "error", err) })
func (c *Config) Watch(ctx context.Context, onError func(error)) error {
	if c == nil || c.data == nil {
		return nil
	}
	var wg sync.WaitGroup
	for i, src := range c.data.sources {
		if src.ReloadInterval <= 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchSource(ctx, i, onError)
		}()
	}
	if wg.Wait(); ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// watchSource reloads the i-th source every ReloadInterval until ctx is
// done.
func (c *Config) watchSource(ctx context.Context, i int, onError func(error)) {
	t := time.NewTicker(c.data.sources[i].ReloadInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.reload(ctx, func(j int) bool { return j == i })
		switch {
		case err == nil:
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			failing = true
			if onError != nil {
				onError(err)
			}
		}
	}
}
