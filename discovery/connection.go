package discovery

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/goaspire/goaspire/internal/redact"
)

// Connection is what the environment says about one referenced resource
// (a database, a cache): its connection string when one was injected, and
// the Aspire 13 per-property variables NAME_HOST, NAME_PORT, ... when they
// were.
//
// A Connection never shows its secrets when printed: fmt (every verb,
// %#v included), log/slog (text and JSON handlers) and encoding/json all
// see the password masked and the connection string and URI with their
// secrets masked. Read the fields to use the values.
type Connection struct {
	// Name is the resource name as asked for ("db").
	Name string
	// ConnectionString is ConnectionStrings:name (else the Aspire 13.6
	// portable alias, see PortableName), or "" when neither is set.
	ConnectionString string
	// Host, Port, Username, Password, DatabaseName and URI are the
	// NAME_HOST, NAME_PORT, NAME_USERNAME, NAME_PASSWORD,
	// NAME_DATABASENAME and NAME_URI variables, "" where not set.
	Host, Port, Username, Password, DatabaseName, URI string
	// ConnectionStringKey is the key ConnectionString was read from
	// ("ConnectionStrings:my-db", or "ConnectionStrings:my_db" when only
	// the portable alias was set), "" when ConnectionString is "".
	ConnectionStringKey string
	// PropertyPrefix is the prefix of the per-property variables the
	// properties were read from ("MY_DB_"): EnvName(Name)+"_", or the
	// portable alias's when only those were set.
	PropertyPrefix string
}

// HasProperties reports whether any per-property variable was set.
func (c Connection) HasProperties() bool {
	return c.Host != "" || c.Port != "" || c.Username != "" || c.Password != "" || c.DatabaseName != "" || c.URI != ""
}

// String describes the connection without its secrets.
func (c Connection) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "connection %q", c.Name)
	if c.ConnectionString != "" {
		b.WriteString(" (connection string set)")
	}
	if c.Host != "" {
		fmt.Fprintf(&b, " host=%s", c.Host)
	}
	if c.Port != "" {
		fmt.Fprintf(&b, " port=%s", c.Port)
	}
	return b.String()
}

// redacted returns c with every secret masked.
func (c Connection) redacted() Connection {
	r := c
	r.ConnectionString = redactConnString(c.ConnectionString)
	r.URI = redactConnString(c.URI)
	if c.Password != "" {
		r.Password = redact.Mask
	}
	return r
}

// redactConnString masks what is secret in a connection string or URL.
func redactConnString(s string) string {
	if s == "" {
		return ""
	}
	return redact.Text(s)
}

// GoString returns c as a Go literal (the %#v form) with its secrets
// masked.
func (c Connection) GoString() string {
	r := c.redacted()
	return fmt.Sprintf("discovery.Connection{Name:%q, ConnectionString:%q, Host:%q, Port:%q, Username:%q, Password:%q, DatabaseName:%q, URI:%q, ConnectionStringKey:%q, PropertyPrefix:%q}",
		r.Name, r.ConnectionString, r.Host, r.Port, r.Username, r.Password, r.DatabaseName, r.URI, r.ConnectionStringKey, r.PropertyPrefix)
}

// Format implements fmt.Formatter so that no verb prints a secret: %#v is
// GoString, every other verb formats String.
func (c Connection) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(c.GoString()))
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), c.String())
}

// LogValue implements slog.LogValuer: a group of the fields, secrets
// masked, empty fields left out.
func (c Connection) LogValue() slog.Value {
	r := c.redacted()
	var attrs []slog.Attr
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("name", r.Name)
	add("connection_string", r.ConnectionString)
	add("host", r.Host)
	add("port", r.Port)
	add("username", r.Username)
	add("password", r.Password)
	add("database", r.DatabaseName)
	add("uri", r.URI)
	add("source", r.ConnectionStringKey)
	return slog.GroupValue(attrs...)
}

// MarshalJSON implements json.Marshaler with the same fields as the struct,
// secrets masked.
func (c Connection) MarshalJSON() ([]byte, error) {
	type plain Connection // no methods: no recursion
	return json.Marshal(plain(c.redacted()))
}

// EnvName encodes a resource or service name the way Aspire 13 does for the
// per-property and endpoint variables: upper case, every character outside
// [A-Za-z0-9_] replaced by '_', and a '_' in front of a leading digit.
func EnvName(name string) string {
	b := make([]byte, 0, len(name)+1)
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z':
			r -= 'a' - 'A'
		case 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_':
		default:
			r = '_'
		}
		b = append(b, byte(r))
	}
	if len(b) > 0 && '0' <= b[0] && b[0] <= '9' {
		b = append([]byte{'_'}, b...)
	}
	return string(b)
}

// PortableName returns the portable alias Aspire 13.6 gives a connection
// name for deploy targets whose variable names are restricted (Kubernetes,
// Azure App Service): every character outside [A-Za-z0-9_] becomes '_',
// then every run of '_' becomes one ("my-db", "my--db" and "my__db" are
// all "my_db"). Case is kept. Those targets inject only
// ConnectionStrings__{alias}; Connection reads the logical name first and
// then the alias.
func PortableName(name string) string {
	b := make([]byte, 0, len(name))
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		default:
			r = '_'
		}
		if r == '_' && len(b) > 0 && b[len(b)-1] == '_' {
			continue
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// ConnectionVariables returns the environment variables that configure the
// connection name, in the order Connection reads them, for messages that
// say what to set: ConnectionStrings__{name}, then
// ConnectionStrings__{alias} when the portable alias differs, then the
// NAME_URI and NAME_HOST variables (again with the alias's when it
// differs).
func ConnectionVariables(name string) []string {
	vars := connStringVars(name)
	for _, p := range propertyPrefixes(name) {
		vars = append(vars, p+"URI")
	}
	for _, p := range propertyPrefixes(name) {
		vars = append(vars, p+"HOST")
	}
	return vars
}

// connStringVars returns ConnectionStrings__{name}, then
// ConnectionStrings__{alias} when the alias differs.
func connStringVars(name string) []string {
	vars := []string{"ConnectionStrings__" + name}
	if alias := PortableName(name); alias != name {
		vars = append(vars, "ConnectionStrings__"+alias)
	}
	return vars
}

// propertyPrefixes returns the per-property variable prefixes of name: its
// own, then its portable alias's when that differs.
func propertyPrefixes(name string) []string {
	p := EnvName(name) + "_"
	if q := EnvName(PortableName(name)) + "_"; q != p {
		return []string{p, q}
	}
	return []string{p}
}

// Connection returns everything configured for the resource name. The
// connection string is ConnectionStrings:name, else ConnectionStrings:alias
// (PortableName); the properties are NAME_HOST, NAME_PORT, ... with NAME
// the EnvName of the name, else of the alias when none of the name's is
// set. It is an error wrapping ErrNotFound, naming the variables looked
// for, when neither a connection string nor any property variable is set.
func (c *Config) Connection(name string) (Connection, error) {
	if strings.TrimSpace(name) == "" {
		return Connection{}, fmt.Errorf("discovery: empty connection name")
	}
	root := c.root()
	conn := Connection{Name: name}
	keys := []string{"ConnectionStrings:" + name}
	if alias := PortableName(name); alias != name {
		keys = append(keys, "ConnectionStrings:"+alias)
	}
	for _, k := range keys {
		if v := root.String(k); strings.TrimSpace(v) != "" {
			conn.ConnectionString, conn.ConnectionStringKey = v, k
			break
		}
	}
	for _, p := range propertyPrefixes(name) {
		conn.Host = root.String(p + "HOST")
		conn.Port = root.String(p + "PORT")
		conn.Username = root.String(p + "USERNAME")
		conn.Password = root.String(p + "PASSWORD")
		conn.DatabaseName = root.String(p + "DATABASENAME")
		conn.URI = root.String(p + "URI")
		if conn.HasProperties() {
			conn.PropertyPrefix = p
			break
		}
	}
	if conn.ConnectionString == "" && !conn.HasProperties() {
		return Connection{}, fmt.Errorf("discovery: connection %q: %w: set %s", name, ErrNotFound, describeVars(name))
	}
	return conn, nil
}

// describeVars says which variables configure name: "ConnectionStrings__db,
// or DB_URI, or DB_HOST and DB_PORT", with the portable alias's variables
// after each when the alias differs.
func describeVars(name string) string {
	var uri, host []string
	for _, p := range propertyPrefixes(name) {
		uri = append(uri, p+"URI")
		host = append(host, p+"HOST and "+p+"PORT")
	}
	return strings.Join(connStringVars(name), " or ") + ", or " + strings.Join(uri, " or ") + ", or " + strings.Join(host, " or ")
}

// ConnectionString returns ConnectionStrings:name (else the portable
// alias's), else the NAME_URI variable. It is an error wrapping
// ErrNotFound, naming them, when none is set; callers that can build a
// connection from NAME_HOST, NAME_PORT and the other properties use
// Connection instead.
func (c *Config) ConnectionString(name string) (string, error) {
	conn, err := c.Connection(name)
	if err != nil {
		return "", err
	}
	if s := strings.TrimSpace(conn.ConnectionString); s != "" {
		return s, nil
	}
	if conn.URI != "" {
		return conn.URI, nil
	}
	return "", fmt.Errorf("discovery: connection %q: %w: %s and %sURI are not set (only other %s* properties are)",
		name, ErrNotFound, strings.Join(connStringVars(name), " and "), conn.PropertyPrefix, conn.PropertyPrefix)
}

func (c *Config) root() *Config {
	if c == nil || c.data == nil {
		return &Config{}
	}
	return &Config{data: c.data}
}
