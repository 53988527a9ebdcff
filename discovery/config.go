// Package discovery is goaspire's reading of the Aspire environment
// contract. It is the only goaspire package that reads the process
// environment (Load; FromMap and WithEnviron never do). One dependency
// reads it on its own: pgx fills what a Postgres connection string leaves
// unset from the PG* variables (PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, ...)
// and ~/.pgpass, as libpq does, whatever Config the string came from.
//
// It gives:
//   - Config: layered configuration (appsettings.json, then
//     appsettings.{Environment}.json, then key-per-file directories such
//     as Kubernetes secret volumes, then the sources added with
//     Config.AddSource such as a secret vault, then environment variables;
//     later wins), with case-insensitive keys, "__" read as ":", and typed
//     getters whose errors name the key at fault;
//   - the environment name (DOTNET_ENVIRONMENT, ASPNETCORE_ENVIRONMENT,
//     else Production);
//   - connection strings (ConnectionStrings__name, then the Aspire 13.6
//     portable alias ConnectionStrings__my_db for "my-db", or the Aspire 13
//     per-property variables NAME_URI, NAME_HOST, ...);
//   - the listening address (PORT, HTTP_PORTS, ASPNETCORE_URLS, :8080);
//   - a Resolver that turns logical service URLs (http://catalog,
//     https+http://catalog, http://_grpc.catalog) into real addresses, and a
//     Transport that does it for an http.Client; opt-in DNS discovery (A/AAAA
//     or SRV records, as in Kubernetes) for names nothing is configured for.
package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goaspire/goaspire/internal/redact"
)

// ErrNotFound is wrapped by errors about a key, connection string or
// endpoint that is not configured.
var ErrNotFound = errors.New("not found")

// KeyError reports a configuration value that could not be used. It names
// the key and never carries a secret value.
type KeyError struct {
	// Key is the configuration key, as the caller spelled it.
	Key string
	// Err says what is wrong.
	Err error
}

// Error implements error.
func (e *KeyError) Error() string { return fmt.Sprintf("config key %q: %v", e.Key, e.Err) }

// Unwrap returns the underlying error.
func (e *KeyError) Unwrap() error { return e.Err }

// Config is a layered view of the service's configuration. Keys are paths
// whose segments are separated by ':' and compared without regard to case.
// The zero value is an empty configuration.
//
// The files, directories and environment a Config was loaded from are read
// once; a Config never changes except through Reload (or Watch), which
// loads again the sources added with AddSource and swaps the new values in
// at once for the Config and every Section of it. A Config without
// sources is immutable.
//
// A Config is safe for concurrent use.
type Config struct {
	// prefix is the section path this view is rooted at, with a trailing
	// ':' (empty for the root).
	prefix string
	// data is shared by every section of one configuration.
	data *configData
}

// Format implements fmt.Formatter: every verb prints the section's path
// and how many keys it holds, never a value, since values may be secrets.
func (c Config) Format(f fmt.State, verb rune) {
	n := 0
	if c.data != nil {
		lp := strings.ToLower(c.prefix)
		for lk := range c.data.state.Load().values {
			if strings.HasPrefix(lk, lp) {
				n++
			}
		}
	}
	path := strings.TrimSuffix(c.prefix, ":")
	if path == "" {
		path = "root"
	}
	_, _ = fmt.Fprintf(f, "discovery.Config(%s, %d keys)", path, n)
}

// configData is shared by every section of one configuration: the
// layers it was built from and, behind an atomic pointer, the merged
// values a reload replaces whole.
type configData struct {
	// below are the pairs of the appsettings files and key-per-file
	// directories, above those of the environment and WithValues, in
	// order, keys with ':'. They never change.
	below, above [][2]string
	environment  string
	// sources are the layers AddSource added, in order; their values are
	// in state.
	sources []Source
	// reload serializes Reload, so two never merge from the same state.
	reload sync.Mutex
	state  atomic.Pointer[configState]
}

// configState is one merged version of the configuration. It is never
// modified once stored.
type configState struct {
	values map[string]string // lower-cased full key -> value
	keys   map[string]string // lower-cased full key -> key as first spelled
	// secret holds the lower-cased keys a Secret source sets.
	secret map[string]bool
	// sourceValues are the values of each of configData.sources.
	sourceValues [][][2]string
}

// merge builds a state from the fixed layers and the sources' values.
func (d *configData) merge(sourceValues [][][2]string) *configState {
	n := len(d.below) + len(d.above)
	for _, sv := range sourceValues {
		n += len(sv)
	}
	st := &configState{
		values:       make(map[string]string, n),
		keys:         make(map[string]string, n),
		sourceValues: sourceValues,
	}
	st.setAll(d.below)
	for i, sv := range sourceValues {
		st.setAll(sv)
		if d.sources[i].Secret {
			if st.secret == nil {
				st.secret = map[string]bool{}
			}
			for _, kv := range sv {
				st.secret[strings.ToLower(kv[0])] = true
			}
		}
	}
	st.setAll(d.above)
	return st
}

func (st *configState) setAll(pairs [][2]string) {
	for _, kv := range pairs {
		lk := strings.ToLower(kv[0])
		if _, ok := st.keys[lk]; !ok {
			st.keys[lk] = kv[0]
		}
		st.values[lk] = kv[1]
	}
}

// Option configures Load.
type Option func(*loadOptions)

type loadOptions struct {
	dir      string
	environ  []string
	haveEnv  bool
	fsys     fs.FS
	overlays []map[string]string
	// keyPerFile are the key-per-file directories, in order (Load only).
	keyPerFile []string
}

// WithDir makes Load read appsettings files from dir instead of the working
// directory.
func WithDir(dir string) Option { return func(o *loadOptions) { o.dir = dir } }

// WithFS makes Load read appsettings files from fsys (for example an
// embed.FS compiled into the binary) instead of a directory.
func WithFS(fsys fs.FS) Option { return func(o *loadOptions) { o.fsys = fsys } }

// WithEnviron makes Load use env, in os.Environ's "KEY=value" form, instead
// of the process environment. Tests use it to stay hermetic.
func WithEnviron(env []string) Option {
	return func(o *loadOptions) { o.environ = env; o.haveEnv = true }
}

// WithValues adds a layer of values on top of every other source. Keys use
// ':' (or "__") as the separator. Use it for values a program sets in code.
func WithValues(values map[string]string) Option {
	return func(o *loadOptions) { o.overlays = append(o.overlays, values) }
}

// Load builds the configuration the way a .NET host does: appsettings.json,
// then appsettings.{Environment}.json, then the key-per-file directories,
// then environment variables, each layer overriding the one before.
// Missing files are fine; a file that is not valid JSON is an error naming
// the file.
//
// Key-per-file directories (KeyPerFileVariable, WithKeyPerFile) hold one
// value per file, as Kubernetes mounts a Secret or ConfigMap and .NET's
// AddKeyPerFile reads it: the file name is the key, with "__" read as ':'
// (a file ConnectionStrings__db sets ConnectionStrings:db), and the
// content is the value, one trailing newline removed. Subdirectories and
// names starting with '.' (Kubernetes' ..data links) or "ignore." are
// skipped; symbolic links are followed. A directory that cannot be read is
// an error naming the variable. Values from files are treated as values
// from the environment: error messages mask those of secret keys alike.
//
// Sources added afterwards with Config.AddSource (a secret vault such as
// Azure Key Vault) sit between the key-per-file directories and the
// environment variables; see Source.
//
// Environment variables named like Azure App Service connection strings
// (CUSTOMCONNSTR_x, SQLCONNSTR_x, SQLAZURECONNSTR_x, MYSQLCONNSTR_x) are
// also read as ConnectionStrings:x, as .NET does.
func Load(opts ...Option) (*Config, error) {
	o := loadOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if !o.haveEnv {
		o.environ = os.Environ()
	}
	env := parseEnviron(o.environ)
	o.keyPerFile = append(keyPerFileDirs(env), o.keyPerFile...)
	return loadConfig(o, env)
}

// loadConfig builds a configuration from the options' files and overlays and
// the environment variables envVars.
func loadConfig(o loadOptions, envVars [][2]string) (*Config, error) {
	fsys := o.fsys
	if fsys == nil {
		dir := o.dir
		if dir == "" {
			dir = "."
		}
		fsys = os.DirFS(dir)
	}

	d := &configData{environment: environmentName(envVars)}

	for _, name := range []string{"appsettings.json", "appsettings." + d.environment + ".json"} {
		raw, err := fs.ReadFile(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("discovery: reading %s: %w", name, err)
		}
		if err := d.loadJSON(name, raw); err != nil {
			return nil, err
		}
	}
	for _, dir := range o.keyPerFile {
		if err := d.loadKeyPerFile(dir); err != nil {
			return nil, err
		}
	}
	for _, kv := range envVars {
		d.above = append(d.above, [2]string{envKey(kv[0]), kv[1]})
	}
	for _, m := range o.overlays {
		for k, v := range m {
			d.above = append(d.above, [2]string{strings.ReplaceAll(k, "__", ":"), v})
		}
	}
	d.state.Store(d.merge(nil))
	return &Config{data: d}, nil
}

// FromMap returns a configuration holding exactly values, in environment
// "Production" unless values sets DOTNET_ENVIRONMENT or
// ASPNETCORE_ENVIRONMENT. Keys use ':' or "__" as the separator. It is meant
// for tests and for programs that build their configuration themselves.
//
// Keys are taken whole: a key may contain '=' (which an environment
// variable name cannot). When two keys differ only in case, the one that
// sorts last wins, so the result does not depend on map order.
func FromMap(values map[string]string) *Config {
	pairs := make([][2]string, 0, len(values))
	for k, v := range values {
		if k != "" {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	c, _ := loadConfig(loadOptions{fsys: emptyFS{}}, pairs)
	return c
}

type emptyFS struct{}

func (emptyFS) Open(string) (fs.File, error) { return nil, fs.ErrNotExist }

// parseEnviron splits "KEY=value" entries, dropping malformed ones, in a
// stable order.
func parseEnviron(environ []string) [][2]string {
	out := make([][2]string, 0, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// azureConnStrPrefixes are the environment-variable prefixes .NET reads as
// connection strings.
var azureConnStrPrefixes = []string{"CUSTOMCONNSTR_", "SQLCONNSTR_", "SQLAZURECONNSTR_", "MYSQLCONNSTR_"}

// envKey turns an environment variable name into a configuration key.
func envKey(name string) string {
	for _, p := range azureConnStrPrefixes {
		if len(name) > len(p) && strings.EqualFold(name[:len(p)], p) {
			return "ConnectionStrings:" + name[len(p):]
		}
	}
	return strings.ReplaceAll(name, "__", ":")
}

// set adds a pair to the layers below the sources (files, directories).
func (d *configData) set(key, value string) {
	d.below = append(d.below, [2]string{key, value})
}

// loadJSON flattens a JSON document into ':'-separated keys: objects by
// property name, arrays by index, scalars by their JSON text (strings
// unquoted), null as the empty string.
func (d *configData) loadJSON(file string, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("discovery: %s is not valid JSON: %w", file, err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return fmt.Errorf("discovery: %s: the top level must be a JSON object", file)
	}
	d.flatten("", doc)
	return nil
}

func (d *configData) flatten(prefix string, v any) {
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + ":" + k
	}
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			d.flatten(join(k), child)
		}
	case []any:
		for i, child := range v {
			d.flatten(join(strconv.Itoa(i)), child)
		}
	case nil:
		d.set(prefix, "")
	case string:
		d.set(prefix, v)
	case json.Number:
		d.set(prefix, v.String())
	case bool:
		d.set(prefix, strconv.FormatBool(v))
	}
}

func (c *Config) full(key string) string {
	if c == nil {
		return key
	}
	return c.prefix + strings.ReplaceAll(key, "__", ":")
}

// Lookup returns the value of key and whether it is set. Keys are
// case-insensitive and may use ':' or "__" as the separator.
func (c *Config) Lookup(key string) (string, bool) {
	if c == nil || c.data == nil {
		return "", false
	}
	v, ok := c.data.state.Load().values[strings.ToLower(c.full(key))]
	return v, ok
}

// String returns the value of key, or "" when it is not set.
func (c *Config) String(key string) string {
	v, _ := c.Lookup(key)
	return v
}

// StringOr returns the value of key, or def when it is not set or empty.
func (c *Config) StringOr(key, def string) string {
	if v, ok := c.Lookup(key); ok && v != "" {
		return v
	}
	return def
}

func (c *Config) keyError(key string, err error) error {
	return &KeyError{Key: c.full(key), Err: err}
}

// invalid reports a value of key that is not a want. The value is quoted
// through quote: masked when the key names a secret or a secret source
// sets it, scrubbed and shortened otherwise.
func (c *Config) invalid(key, value, want string) error {
	return c.keyError(key, fmt.Errorf("invalid %s %q", want, c.quote(key, value)))
}

// quote returns value, read from key, as an error may quote it.
func (c *Config) quote(key, value string) string {
	if c.IsSecret(key) {
		return redact.Mask
	}
	return redact.Value(c.full(key), value)
}

// IsSecret reports whether the value of key must never be shown: the key
// names a secret ("Password", "ApiKey"), or
// a source marked Secret sets it, whatever its name. Errors of Config's
// getters quote such a value as "***".
func (c *Config) IsSecret(key string) bool {
	full := c.full(key)
	if redact.IsSecretKey(full) {
		return true
	}
	return c != nil && c.data != nil && c.data.state.Load().secret[strings.ToLower(full)]
}

// Int returns key as an int, or def when it is not set or empty.
func (c *Config) Int(key string, def int) (int, error) {
	v, ok := c.Lookup(key)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, c.invalid(key, v, "integer")
	}
	return n, nil
}

// Float returns key as a float64, or def when it is not set or empty.
func (c *Config) Float(key string, def float64) (float64, error) {
	v, ok := c.Lookup(key)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return def, c.invalid(key, v, "number")
	}
	return f, nil
}

// Bool returns key as a bool, or def when it is not set or empty. It
// accepts what .NET's bool.Parse accepts ("true"/"false" in any case) and
// also 1/0, yes/no and on/off.
func (c *Config) Bool(key string, def bool) (bool, error) {
	v, ok := c.Lookup(key)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return def, nil
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return def, c.invalid(key, v, "boolean")
}

// Duration returns key as a time.Duration, or def when it is not set or
// empty. It accepts .NET TimeSpan text ("00:00:30", "1.02:03:04.5",
// "00:01") and Go durations ("30s", "1m30s"). A bare number is refused,
// because .NET would read "30" as thirty days: write "00:00:30" or "30s".
func (c *Config) Duration(key string, def time.Duration) (time.Duration, error) {
	v, ok := c.Lookup(key)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return def, nil
	}
	d, err := parseDuration(v)
	if err != nil {
		return def, c.keyError(key, fmt.Errorf("invalid duration %q: %w", c.quote(key, v), err))
	}
	return d, nil
}

// Section returns the view of the configuration below key: in the section
// "Aspire:Npgsql", key "Timeout" is "Aspire:Npgsql:Timeout". Section("")
// is the same view as c.
func (c *Config) Section(key string) *Config {
	if c == nil || c.data == nil {
		return &Config{}
	}
	if key == "" {
		return &Config{prefix: c.prefix, data: c.data}
	}
	return &Config{prefix: c.full(key) + ":", data: c.data}
}

// Path returns the section path this view is rooted at ("" for the root).
func (c *Config) Path() string {
	if c == nil {
		return ""
	}
	return strings.TrimSuffix(c.prefix, ":")
}

// Exists reports whether key has a value or any key below it has one.
func (c *Config) Exists(key string) bool {
	if _, ok := c.Lookup(key); ok {
		return true
	}
	return len(c.Section(key).Children()) > 0
}

// Children returns the names of the immediate children of this section,
// spelled as they were first seen, sorted case-insensitively.
func (c *Config) Children() []string {
	if c == nil || c.data == nil {
		return nil
	}
	lp := strings.ToLower(c.prefix)
	seen := map[string]string{}
	for lk, orig := range c.data.state.Load().keys {
		if !strings.HasPrefix(lk, lp) || len(lk) == len(lp) {
			continue
		}
		rest := lk[len(lp):]
		name := rest
		if i := strings.IndexByte(rest, ':'); i >= 0 {
			name = rest[:i]
		}
		if _, ok := seen[strings.ToLower(name)]; !ok {
			if len(orig) == len(lk) {
				name = orig[len(lp) : len(lp)+len(name)]
			}
			seen[strings.ToLower(name)] = name
		}
	}
	out := make([]string, 0, len(seen))
	for _, v := range seen {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i]) < strings.ToLower(out[j]) })
	return out
}

// Environment returns the host environment name: DOTNET_ENVIRONMENT, else
// ASPNETCORE_ENVIRONMENT, else "Production".
func (c *Config) Environment() string {
	if c == nil || c.data == nil || c.data.environment == "" {
		return Production
	}
	return c.data.environment
}

// IsDevelopment reports whether the environment is "Development" (in any
// case), as .NET's IHostEnvironment.IsDevelopment does.
func (c *Config) IsDevelopment() bool { return strings.EqualFold(c.Environment(), Development) }

// Standard environment names.
const (
	Development = "Development"
	Staging     = "Staging"
	Production  = "Production"
)

func environmentName(env [][2]string) string {
	for _, name := range []string{"DOTNET_ENVIRONMENT", "ASPNETCORE_ENVIRONMENT"} {
		for _, kv := range env {
			if kv[0] == name && strings.TrimSpace(kv[1]) != "" {
				return strings.TrimSpace(kv[1])
			}
		}
	}
	return Production
}

// ParseDuration parses .NET TimeSpan text ("[-][d.]hh:mm[:ss[.fffffff]]")
// or a Go duration ("1m30s"). A bare number other than 0 is an error, since
// .NET and Go disagree on its unit, and so is a duration too long for a
// time.Duration (about 292 years: 106751 days). An error quotes s shortened
// and with any secret in it masked; Config.Duration also names the key.
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", redact.Value("", s), err)
	}
	return d, nil
}

// errDurationRange reports a duration that does not fit a time.Duration.
var errDurationRange = errors.New("out of range: at most 106751.23:47:16.854775807 (292 years)")

// goDuration matches the syntax time.ParseDuration accepts.
var goDuration = regexp.MustCompile(`^[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$`)

// parseDuration is ParseDuration without the value in its errors.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	if strings.Contains(s, ":") {
		return parseTimeSpan(s)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, errors.New(`a bare number has no unit: write "hh:mm:ss" (.NET TimeSpan) or a Go duration such as "30s"`)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if goDuration.MatchString(s) {
			return 0, errDurationRange // well-formed, so too long
		}
		return 0, errors.New(`want "hh:mm:ss" or a Go duration such as "30s"`)
	}
	return d, nil
}

func parseTimeSpan(s string) (time.Duration, error) {
	bad := func() (time.Duration, error) {
		return 0, errors.New(`want "[d.]hh:mm[:ss[.fffffff]]"`)
	}
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	parts := strings.Split(body, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return bad()
	}
	var days, hours int64
	h := parts[0]
	if d, hh, ok := strings.Cut(h, "."); ok {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n < 0 || n > 10675199 {
			return bad()
		}
		days, h = n, hh
	}
	hours, err := strconv.ParseInt(h, 10, 64)
	if err != nil || hours < 0 || hours > 23 {
		return bad()
	}
	minutes, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || minutes < 0 || minutes > 59 {
		return bad()
	}
	// .NET's TimeSpan reaches 10675199 days; time.Duration stops at
	// math.MaxInt64 ns. Sum in ns with every step checked.
	const day = int64(24 * time.Hour)
	if days > math.MaxInt64/day {
		return 0, errDurationRange
	}
	total := days * day
	add := func(n int64) bool {
		if total > math.MaxInt64-n {
			return false
		}
		total += n
		return true
	}
	if !add(hours*int64(time.Hour)) || !add(minutes*int64(time.Minute)) {
		return 0, errDurationRange
	}
	if len(parts) == 3 {
		sec, frac, hasFrac := strings.Cut(parts[2], ".")
		n, err := strconv.ParseInt(sec, 10, 64)
		if err != nil || n < 0 || n > 59 {
			return bad()
		}
		if !add(n * int64(time.Second)) {
			return 0, errDurationRange
		}
		if hasFrac {
			if frac == "" || len(frac) > 7 {
				return bad()
			}
			f, err := strconv.ParseInt(frac, 10, 64)
			if err != nil || f < 0 {
				return bad()
			}
			for i := len(frac); i < 9; i++ {
				f *= 10
			}
			if !add(f) {
				return 0, errDurationRange
			}
		}
	}
	if neg {
		total = -total
	}
	return time.Duration(total), nil
}
