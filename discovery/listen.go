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

// ListenEndpoint is the endpoint the service's HTTP server listens on.
type ListenEndpoint struct {
	// Addr is the host:port to listen on; an empty host means every
	// interface.
	Addr string
	// TLS reports an https endpoint.
	TLS bool
	// Key is the configuration key the endpoint came from ("PORT",
	// "ASPNETCORE_URLS", "Kestrel:Endpoints:web:Url", ...), empty for the
	// default.
	Key string
	// Section is the Kestrel:Endpoints:{name} section the endpoint was
	// configured in ("" otherwise), where its Protocols and Certificate
	// may be set.
	Section string
}

// ListenAddress returns the address the service's HTTP server listens on:
// PORT (what the AppHost's WithHttpEndpoint(env: "PORT") injects), else the
// first of HTTP_PORTS, else the first http URL of ASPNETCORE_URLS (a host
// of "+", "*" or "0.0.0.0" means every interface), else ":8080". A value
// that is not a valid port or URL is an error naming the variable.
//
// ListenAddress knows plain HTTP only; ListenEndpoint also returns https
// endpoints.
func (c *Config) ListenAddress() (string, error) {
	ep, err := c.listenEndpoint(false)
	return ep.Addr, err
}

// ListenEndpoint returns the endpoint the service's HTTP server listens
// on, as Kestrel would pick it, the first one found of:
//
//   - Kestrel:Endpoints:{name}:Url, the first endpoint by name;
//   - PORT (http);
//   - HTTP_PORTS, its first port (http);
//   - HTTPS_PORTS, its first port (https);
//   - ASPNETCORE_URLS: its first https URL when a certificate is
//     configured (Kestrel:Certificates:Default:Path), else its first http
//     URL, else its first https URL;
//   - ":8080" (http).
//
// A value that is not a valid port or URL is an error naming the key.
func (c *Config) ListenEndpoint() (ListenEndpoint, error) { return c.listenEndpoint(true) }

func (c *Config) listenEndpoint(https bool) (ListenEndpoint, error) {
	root := c.root()
	if https {
		eps := root.Section("Kestrel:Endpoints")
		for _, name := range eps.Children() {
			key := "Kestrel:Endpoints:" + name + ":Url"
			v := strings.TrimSpace(root.String(key))
			if v == "" {
				continue
			}
			ep, err := parseListenURL(key, v)
			if err != nil {
				return ListenEndpoint{}, &KeyError{Key: key, Err: err}
			}
			ep.Section = "Kestrel:Endpoints:" + name
			return ep, nil
		}
	}
	if v := strings.TrimSpace(root.String("PORT")); v != "" {
		if err := checkPort("PORT", v); err != nil {
			return ListenEndpoint{}, &KeyError{Key: "PORT", Err: err}
		}
		return ListenEndpoint{Addr: ":" + v, Key: "PORT"}, nil
	}
	ports := []string{"HTTP_PORTS"}
	if https {
		ports = append(ports, "HTTPS_PORTS")
	}
	for _, key := range ports {
		v := strings.TrimSpace(root.String(key))
		if v == "" {
			continue
		}
		var first string
		if ports := strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' }); len(ports) > 0 {
			first = strings.TrimSpace(ports[0])
		}
		if err := checkPort(key, first); err != nil {
			return ListenEndpoint{}, &KeyError{Key: key, Err: err}
		}
		return ListenEndpoint{Addr: ":" + first, TLS: key == "HTTPS_PORTS", Key: key}, nil
	}
	if v := strings.TrimSpace(root.String("ASPNETCORE_URLS")); v != "" {
		preferTLS := https && strings.TrimSpace(root.String("Kestrel:Certificates:Default:Path")) != ""
		ep, err := listenFromURLs(v, https, preferTLS)
		if err != nil {
			return ListenEndpoint{}, &KeyError{Key: "ASPNETCORE_URLS", Err: err}
		}
		return ep, nil
	}
	return ListenEndpoint{Addr: DefaultListenAddress}, nil
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

// listenFromURLs picks the endpoint of an ASPNETCORE_URLS list
// ("http://+:5000;https://+:5001"): the first http URL, or with https the
// first https URL when preferTLS or when there is no http one. Errors
// quote the URL at fault with any password masked (redact.Value), never
// the raw value.
func listenFromURLs(v string, https, preferTLS bool) (ListenEndpoint, error) {
	const key = "ASPNETCORE_URLS"
	var plain, secure *ListenEndpoint
	for _, raw := range strings.Split(v, ";") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if scheme, _, ok := strings.Cut(raw, "://"); ok && !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			continue // not for the HTTP server
		}
		ep, err := parseListenURL(key, raw)
		if err != nil {
			return ListenEndpoint{}, err
		}
		switch {
		case !ep.TLS && plain == nil:
			plain = &ep
		case ep.TLS && secure == nil:
			secure = &ep
		}
	}
	switch {
	case https && secure != nil && (preferTLS || plain == nil):
		return *secure, nil
	case plain != nil:
		return *plain, nil
	}
	want := "http"
	if https {
		want = "http or https"
	}
	return ListenEndpoint{}, fmt.Errorf("no %s URL in %q", want, redact.Value(key, v))
}

// parseListenURL parses one Kestrel URL ("http://+:5000",
// "https://localhost:5001/"), read from key.
func parseListenURL(key, raw string) (ListenEndpoint, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ListenEndpoint{}, fmt.Errorf("invalid URL %q", redact.Value(key, raw))
	}
	ep := ListenEndpoint{Key: key}
	defPort := "80"
	switch strings.ToLower(scheme) {
	case "http":
	case "https":
		ep.TLS, defPort = true, "443"
	default:
		return ListenEndpoint{}, fmt.Errorf("URL %q: scheme must be http or https", redact.Value(key, raw))
	}
	hostport, _, _ := strings.Cut(rest, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the host alone, which must not look like a
		// broken host:port or IPv6 literal.
		if hostport == "" || strings.ContainsAny(hostport, ":[]") {
			return ListenEndpoint{}, fmt.Errorf("invalid URL %q", redact.Value(key, raw))
		}
		host, port = hostport, defPort
	}
	if err := checkPort(key, port); err != nil {
		return ListenEndpoint{}, err
	}
	switch host {
	case "+", "*", "0.0.0.0", "[::]", "::":
		host = ""
	}
	ep.Addr = net.JoinHostPort(host, port)
	return ep, nil
}
