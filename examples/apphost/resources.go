package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/goaspire/goaspire/testserver"
)

// resources are the backing servers: throwaway ones started here, or ones
// the environment names.
type resources struct {
	primaryConn, replicaConn, redisConn string

	// Set only for servers started here; the fault steps need them.
	primary, replica *testserver.Postgres
	redis            *testserver.Redis
}

func (r *resources) owned() bool { return r.primary != nil }

func lookupEnv(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func startResources(ctx context.Context, out io.Writer, environ []string) (*resources, error) {
	given := &resources{
		primaryConn: lookupEnv(environ, "ConnectionStrings__db-primary"),
		replicaConn: lookupEnv(environ, "ConnectionStrings__db-replica-east"),
		redisConn:   lookupEnv(environ, "ConnectionStrings__cache"),
	}
	if given.primaryConn != "" && given.redisConn != "" {
		fmt.Fprintln(out, "· using the Postgres and Redis named by the environment")
		return given, nil
	}

	r := &resources{}
	var err error
	fmt.Fprint(out, "· starting Postgres primary ... ")
	if r.primary, err = testserver.StartPostgres(ctx, testserver.WithPostgresDatabase("catalog")); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "%s\n· starting Postgres streaming replica ... ", r.primary.Host()+fmt.Sprintf(":%d", r.primary.Port()))
	if r.replica, err = r.primary.StartReplica(ctx); err != nil {
		r.close()
		return nil, err
	}
	fmt.Fprintf(out, "127.0.0.1:%d\n· starting Redis ... ", r.replica.Port())
	if r.redis, err = testserver.StartRedis(ctx); err != nil {
		r.close()
		return nil, err
	}
	fmt.Fprintln(out, r.redis.Addr())
	r.primaryConn = r.primary.ConnectionString()
	r.replicaConn = r.replica.ConnectionString()
	r.redisConn = r.redis.ConnectionString()
	return r, nil
}

func (r *resources) close() {
	if r.redis != nil {
		r.redis.Close()
	}
	if r.primary != nil {
		r.primary.Close() // closes its replica first
	}
}

// secrets returns the passwords of the servers started here, by what they
// are, for the log check.
func (r *resources) secrets() map[string]string {
	out := map[string]string{}
	if r.primary != nil {
		out["Postgres password"] = r.primary.Password()
	}
	if r.redis != nil {
		out["Redis password"] = r.redis.Password()
	}
	return out
}
