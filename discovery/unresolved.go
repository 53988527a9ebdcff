package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// UnresolvedError reports a request to a logical service name that nothing
// configures (no services__* nor {SERVICE}_{ENDPOINT} variable) and that
// DNS does not know either (NXDOMAIN, "no such host"): most often a
// misspelled service name or a reference missing from the AppHost. It
// names the variables that would configure the service. It is not a
// transient failure: resilience does not retry it. It matches ErrNotFound
// with errors.Is, and unwraps to the DNS error.
type UnresolvedError struct {
	// Service is the logical service name, as the URL spelled it.
	Service string
	// Variables are the environment variables that would configure the
	// service for the URL's schemes (or endpoint name), in the order the
	// Resolver reads them.
	Variables []string
	// Err is the DNS error of the pass-through lookup.
	Err error
}

// Error implements error.
func (e *UnresolvedError) Error() string {
	return fmt.Sprintf("discovery: service %q is not configured and DNS does not know it (check the name and the AppHost's reference; set one of %s): %v",
		e.Service, strings.Join(e.Variables, ", "), e.Err)
}

// Unwrap returns the DNS error.
func (e *UnresolvedError) Unwrap() error { return e.Err }

// Is reports whether target is ErrNotFound.
func (e *UnresolvedError) Is(target error) bool { return target == ErrNotFound }

// ServiceVariables returns the environment variables that configure the
// endpoints q looks for, in the order a Resolver reads them: for each name
// ("default" is left out when the query has no endpoint name: Aspire
// never writes it) the services__{service}__{name}__0 form, then the
// {SERVICE}_{NAME} form. For https+http://pricing it is
// services__pricing__https__0, PRICING_HTTPS, services__pricing__http__0,
// PRICING_HTTP.
func ServiceVariables(q Query) []string {
	names := q.Schemes
	if q.Endpoint != "" {
		names = []string{q.Endpoint}
	}
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		out = append(out, "services__"+q.Service+"__"+n+"__0", EnvName(q.Service)+"_"+EnvName(n))
	}
	return out
}

// Unresolved reports whether err, the failure of a request sent to the
// logical URL u, means that u's service is unresolvable: nothing is
// configured for it (the Resolver passed the host through to DNS, DNS
// discovery not covering it) and err holds a *net.DNSError saying DNS has
// no such host for it. Then it returns an *UnresolvedError wrapping err,
// and first is true the first time this Resolver reports the service, so
// that a caller logs one warning per name rather than one per request.
// Otherwise it returns nil.
//
// resilience's pipeline calls it after each failed attempt and does not
// retry such a failure; Transport calls it too.
func (r *Resolver) Unresolved(u *url.URL, err error) (uerr *UnresolvedError, first bool) {
	if r == nil || u == nil || err == nil {
		return nil, false
	}
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		return nil, false
	}
	host := u.Hostname()
	if !strings.EqualFold(strings.TrimSuffix(dnsErr.Name, "."), host) {
		return nil, false // another name failed (a proxy's, say)
	}
	res, rerr := r.resolve(u)
	if rerr != nil || res.dns != nil || len(res.endpoints) > 0 {
		return nil, false
	}
	q, qerr := ParseQuery(u)
	if qerr != nil {
		return nil, false
	}
	uerr = &UnresolvedError{Service: q.Service, Variables: ServiceVariables(q), Err: err}
	_, warned := r.warned.LoadOrStore(strings.ToLower(host), struct{}{})
	return uerr, !warned
}
