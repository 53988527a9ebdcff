package aspiregrpc

import (
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/goaspire/goaspire/discovery"
)

// Keepalive of clients and servers. A client pings a connection that
// carried nothing for KeepAlivePingDelay (10 s, grpc-go's minimum), with
// or without calls open, and drops it when nothing answers within
// KeepAlivePingTimeout (5 s): a silent instance's connection is closed
// within 15 s and the instance is no longer picked. The App's server
// accepts pings every 5 s or more, with or without calls (grpc-go's
// default policy, 5 min and only with calls, answers faster pings with
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings", after which the client
// doubles its delay).
const (
	defaultKeepAlivePingDelay   = 10 * time.Second
	defaultKeepAlivePingTimeout = 5 * time.Second
	// minKeepAlivePingDelay is the shortest delay grpc-go's client allows
	// (it raises shorter ones to it).
	minKeepAlivePingDelay = 10 * time.Second
)

// serverKeepalive is the App's gRPC server's ping policy: MinTime at most
// half of the shortest client delay, so that a ping that comes a little
// early is no strike.
var serverKeepalive = keepalive.EnforcementPolicy{MinTime: minKeepAlivePingDelay / 2, PermitWithoutStream: true}

// clientKey names the key of field for the client called name: the
// client's own when it is set, else the shared one.
func clientKey(cfg *discovery.Config, name, field string) string {
	return layeredKey(cfg, SectionClients, SectionClients+":"+name, field)
}

// readKeepalive reads the keepalive of the client called name. A delay of
// 0 turns the pings off; a delay under grpc-go's 10 s minimum is raised
// to it.
func readKeepalive(cfg *discovery.Config, name string) (keepalive.ClientParameters, error) {
	var kp keepalive.ClientParameters
	key := clientKey(cfg, name, "KeepAlivePingDelay")
	delay, err := cfg.Duration(key, defaultKeepAlivePingDelay)
	switch {
	case err != nil:
		return kp, err
	case delay < 0:
		return kp, &discovery.KeyError{Key: key, Err: errors.New("must not be negative (0 turns the pings off)")}
	case delay == 0:
		return kp, nil
	}
	key = clientKey(cfg, name, "KeepAlivePingTimeout")
	timeout, err := cfg.Duration(key, defaultKeepAlivePingTimeout)
	if err != nil {
		return kp, err
	}
	if timeout <= 0 {
		return kp, &discovery.KeyError{Key: key, Err: errors.New("must be positive")}
	}
	key = clientKey(cfg, name, "KeepAlivePingPolicy")
	always := true
	switch v := strings.TrimSpace(cfg.String(key)); {
	case v == "" || strings.EqualFold(v, "Always"):
	case strings.EqualFold(v, "WithActiveRequests"):
		always = false
	default:
		return kp, &discovery.KeyError{Key: key, Err: errors.New(`must be "Always" or "WithActiveRequests"`)}
	}
	return keepalive.ClientParameters{
		Time:                max(delay, minKeepAlivePingDelay),
		Timeout:             timeout,
		PermitWithoutStream: always,
	}, nil
}
