package servicedefaults

import (
	"errors"
	"strings"

	"google.golang.org/grpc/keepalive"

	"github.com/goaspire/goaspire/discovery"
)

// SectionGRPCClients holds the connection settings of every gRPC client
// (KeepAlivePingDelay, KeepAlivePingTimeout, KeepAlivePingPolicy, named
// after .NET's SocketsHttpHandler properties, which Grpc.Net.Client
// uses); SectionGRPCClients + ":{name}" overrides them per client.
const SectionGRPCClients = "Aspire:ServiceDefaults:GrpcClients"

// grpcClientKey names the key of field for the client called name: the
// client's own when it is set, else the shared one.
func grpcClientKey(cfg *discovery.Config, name, field string) string {
	return layeredKey(cfg, SectionGRPCClients, SectionGRPCClients+":"+name, field)
}

// grpcKeepalive reads the keepalive of the client called name. A delay of
// 0 turns the pings off; a delay under grpc-go's 10 s minimum is raised
// to it.
func grpcKeepalive(cfg *discovery.Config, name string) (keepalive.ClientParameters, error) {
	var kp keepalive.ClientParameters
	key := grpcClientKey(cfg, name, "KeepAlivePingDelay")
	delay, err := cfg.Duration(key, defaultGRPCKeepAlivePingDelay)
	switch {
	case err != nil:
		return kp, err
	case delay < 0:
		return kp, &discovery.KeyError{Key: key, Err: errors.New("must not be negative (0 turns the pings off)")}
	case delay == 0:
		return kp, nil
	}
	key = grpcClientKey(cfg, name, "KeepAlivePingTimeout")
	timeout, err := cfg.Duration(key, defaultGRPCKeepAlivePingTimeout)
	if err != nil {
		return kp, err
	}
	if timeout <= 0 {
		return kp, &discovery.KeyError{Key: key, Err: errors.New("must be positive")}
	}
	key = grpcClientKey(cfg, name, "KeepAlivePingPolicy")
	always := true
	switch v := strings.TrimSpace(cfg.String(key)); {
	case v == "" || strings.EqualFold(v, "Always"):
	case strings.EqualFold(v, "WithActiveRequests"):
		always = false
	default:
		return kp, &discovery.KeyError{Key: key, Err: errors.New(`must be "Always" or "WithActiveRequests"`)}
	}
	return keepalive.ClientParameters{
		Time:                max(delay, grpcMinKeepAlivePingDelay),
		Timeout:             timeout,
		PermitWithoutStream: always,
	}, nil
}
