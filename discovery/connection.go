package discovery

import (
	"fmt"
	"strings"
)

// Connection is what the environment says about one referenced resource
// (a database, a cache): its connection string when one was injected, and
// the Aspire 13 per-property variables NAME_HOST, NAME_PORT, ... when they
// were.
type Connection struct {
	// Name is the resource name as asked for ("db").
	Name string
	// ConnectionString is ConnectionStrings:name, or "" when it is not set.
	ConnectionString string
	// Host, Port, Username, Password, DatabaseName and URI are the
	// NAME_HOST, NAME_PORT, NAME_USERNAME, NAME_PASSWORD,
	// NAME_DATABASENAME and NAME_URI variables, "" where not set.
	Host, Port, Username, Password, DatabaseName, URI string
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

// Connection returns everything configured for the resource name. It is an
// error wrapping ErrNotFound, naming the variables looked for, when neither
// a connection string nor any property variable is set.
func (c *Config) Connection(name string) (Connection, error) {
	if strings.TrimSpace(name) == "" {
		return Connection{}, fmt.Errorf("discovery: empty connection name")
	}
	root := c.root()
	conn := Connection{Name: name, ConnectionString: root.String("ConnectionStrings:" + name)}
	p := EnvName(name) + "_"
	conn.Host = root.String(p + "HOST")
	conn.Port = root.String(p + "PORT")
	conn.Username = root.String(p + "USERNAME")
	conn.Password = root.String(p + "PASSWORD")
	conn.DatabaseName = root.String(p + "DATABASENAME")
	conn.URI = root.String(p + "URI")
	if strings.TrimSpace(conn.ConnectionString) == "" && !conn.HasProperties() {
		return Connection{}, fmt.Errorf("discovery: connection %q: %w: set ConnectionStrings__%s, or %sURI, or %sHOST and %sPORT",
			name, ErrNotFound, name, p, p, p)
	}
	return conn, nil
}

// ConnectionString returns ConnectionStrings:name, else the NAME_URI
// variable. It is an error wrapping ErrNotFound, naming both, when neither
// is set; callers that can build a connection from NAME_HOST, NAME_PORT and
// the other properties use Connection instead.
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
	p := EnvName(name) + "_"
	return "", fmt.Errorf("discovery: connection %q: %w: ConnectionStrings__%s and %sURI are not set (only other %s* properties are)",
		name, ErrNotFound, name, p, p)
}

func (c *Config) root() *Config {
	if c == nil || c.data == nil {
		return &Config{}
	}
	return &Config{data: c.data}
}
