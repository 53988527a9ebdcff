package discovery

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/goaspire/goaspire/internal/redact"
)

// DefaultListenAddress is used when no variable names a port.
const DefaultListenAddress = ":8080"

// ListenAddress returns the address the service's HTTP server listens on:
// PORT (what the AppHost's WithHttpEndpoint(env: "PORT") injects), else the
// first of HTTP_PORTS, else the first http URL of ASPNETCORE_URLS (a host
// of "+", "*" or "0.0.0.0" means every interface), else ":8080". A value
// that is not a valid port or URL is an error naming the variable.
func (c *Config) ListenAddress() (string, error) {
	root := c.root()
	if v := strings.TrimSpace(root.String("PORT")); v != "" {
		if err := checkPort("PORT", v); err != nil {
			return "", &KeyError{Key: "PORT", Err: err}
		}
		return ":" + v, nil
	}
	if v := strings.TrimSpace(root.String("HTTP_PORTS")); v != "" {
		var first string
		if ports := strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' }); len(ports) > 0 {
			first = strings.TrimSpace(ports[0])
		}
		if err := checkPort("HTTP_PORTS", first); err != nil {
			return "", &KeyError{Key: "HTTP_PORTS", Err: err}
		}
		return ":" + first, nil
	}
	if v := strings.TrimSpace(root.String("ASPNETCORE_URLS")); v != "" {
		addr, err := listenFromURLs(v)
		if err != nil {
			return "", &KeyError{Key: "ASPNETCORE_URLS", Err: err}
		}
		return addr, nil
	}
	return DefaultListenAddress, nil
}

// checkPort reports whether v, read from key, is a port number. The error
// quotes v through redact.Value, as every error quoting a value does.
func checkPort(key, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q", redact.Value(key, v))
	}
	return nil
}

// listenFromURLs picks the first http URL of an ASPNETCORE_URLS list
// ("http://+:5000;https://+:5001"). https URLs are skipped: TLS termination
// is the job of the proxy in front of a Go service. Errors quote the URL
// at fault with any password masked (redact.Value), never the raw value.
func listenFromURLs(v string) (string, error) {
	const key = "ASPNETCORE_URLS"
	for _, raw := range strings.Split(v, ";") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		scheme, rest, ok := strings.Cut(raw, "://")
		if !ok {
			return "", fmt.Errorf("invalid URL %q", redact.Value(key, raw))
		}
		if !strings.EqualFold(scheme, "http") {
			continue
		}
		hostport, _, _ := strings.Cut(rest, "/")
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			// No port: the host alone, which must not look like a
			// broken host:port or IPv6 literal.
			if hostport == "" || strings.ContainsAny(hostport, ":[]") {
				return "", fmt.Errorf("invalid URL %q", redact.Value(key, raw))
			}
			host, port = hostport, "80"
		}
		if err := checkPort(key, port); err != nil {
			return "", err
		}
		switch host {
		case "+", "*", "0.0.0.0", "[::]", "::":
			host = ""
		}
		return net.JoinHostPort(host, port), nil
	}
	return "", fmt.Errorf("no http URL in %q", redact.Value(key, v))
}
