package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/connstr"
)

type config struct {
	keep    bool
	environ []string
	// catalogs is how many catalog instances to start (default 2).
	catalogs int
	// faults, when not nil, receives the deliberate failures the scenario
	// caused, so a caller checking the exported telemetry can tell their
	// errors from real ones.
	faults *[]fault
}

// stack is everything the launcher started.
type stack struct {
	res      *resources
	catalogs []*service
	users    []*service // users.go
	gateway  *service
	jobs     *jobsStack // nil without RabbitMQ
	polyglot *polyglotStack
	dir      string
	faults   []fault
}

// fault is a deliberate failure of the scenario: from the moment it was
// caused until the system was seen to have recovered (to is zero when it
// lasted until the end).
type fault struct {
	name     string
	from, to time.Time
}

// beginFault records the start of a deliberate failure and returns the
// function that records its end.
func (st *stack) beginFault(name string) (end func()) {
	st.faults = append(st.faults, fault{name: name, from: time.Now()})
	i := len(st.faults) - 1
	return func() { st.faults[i].to = time.Now() }
}

func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	if cfg.catalogs == 0 {
		cfg.catalogs = 2
	}
	dir, err := os.MkdirTemp("", "goaspire-apphost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintln(out, "goaspire apphost: starting resources")
	res, err := startResources(ctx, out, cfg.environ)
	if err != nil {
		return err
	}
	defer res.close()

	fmt.Fprintln(out, "· building catalog, gateway, users and jobs")
	bins, err := buildServices(ctx, dir, "catalog", "gateway", "users", "jobs")
	if err != nil {
		return err
	}

	st := &stack{res: res, dir: dir}
	if cfg.faults != nil {
		defer func() { *cfg.faults = st.faults }()
	}
	defer func() { st.jobs.close() }() // after the services have stopped
	defer func() {
		if stopErr := st.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if err := st.start(ctx, out, cfg, bins); err != nil {
		return err
	}
	if res.owned() {
		// The catalogs created the schema on the primary as they started;
		// the scenario's first replica read must find it there, as it
		// would after a migration run before the deployment.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := res.replica.WaitCaughtUp(wctx)
		cancel()
		if err != nil {
			return err
		}
	}
	if st.jobs, err = startJobs(ctx, out, cfg, st, bins["jobs"]); err != nil {
		return err
	}
	if st.polyglot, err = startPolyglot(ctx, out, cfg, st); err != nil {
		return err
	}

	fmt.Fprintln(out, "\npolyglot scenario")
	scenarioErr := runPolyglotScenario(ctx, out, st)
	if scenarioErr == nil {
		fmt.Fprintln(out, "\nscenario")
		scenarioErr = runScenario(ctx, out, st)
	}
	if scenarioErr == nil {
		scenarioErr = usersOutage(ctx, out, st)
	}
	if scenarioErr == nil && st.jobs != nil {
		fmt.Fprintln(out, "\njobs scenario")
		scenarioErr = runJobsScenario(ctx, out, st.jobs)
	}
	if err := scenarioErr; err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(out, "\ninterrupted")
			return nil
		}
		fmt.Fprintf(out, "\nscenario FAILED: %v\n", err)
		for _, s := range st.all() {
			fmt.Fprintf(out, "\n--- %s log (last lines) ---\n%s\n", s.name, s.logTail())
		}
		return errors.New("the scenario failed")
	}
	fmt.Fprintln(out, "\nscenario passed")

	if cfg.keep {
		fmt.Fprintf(out, "\nrunning until interrupted: gateway %s, catalogs", st.gateway.url())
		for _, c := range st.catalogs {
			fmt.Fprintf(out, " %s", c.url())
		}
		fmt.Fprintf(out, "\nlogs in %s\n", dir)
		<-ctx.Done()
	}
	fmt.Fprintln(out, "\nstopping (SIGTERM, then waiting for each service to drain)")
	if err := st.stop(); err != nil {
		return err
	}
	// Secrets never leave a process: not one service log may hold a
	// password the launcher handed it.
	for _, s := range st.all() {
		if leak := s.findSecret(st.jobs.secrets(res.secrets())); leak != "" {
			return fmt.Errorf("the log of %s contains the %s", s.name, leak)
		}
	}
	fmt.Fprintln(out, "all services stopped cleanly; no password appears in their logs")
	return nil
}

func (st *stack) all() []*service {
	all := append([]*service(nil), st.catalogs...)
	all = append(all, st.users...)
	if st.gateway != nil {
		all = append(all, st.gateway)
	}
	all = append(all, st.jobs.services()...)
	return append(all, st.polyglot.services()...)
}

// stop stops every service still running; it is safe to call twice.
func (st *stack) stop() error {
	var errs []error
	for _, s := range st.all() {
		if err := s.stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// injected is what an Aspire AppHost puts into a process's environment.
// Both the classic and the Aspire 13 forms are given, as Aspire 13 does.
type injected map[string]string

func (e injected) connection(name, connStr string, parse func(string) map[string]string) {
	e["ConnectionStrings__"+name] = connStr
	for k, v := range parse(connStr) {
		e[discovery.EnvName(name)+"_"+k] = v
	}
}

// postgresProperties splits an Npgsql connection string into Aspire 13's
// per-property variables (HOST, PORT, USERNAME, PASSWORD, DATABASENAME).
// A string it cannot read gives none: the connection string still stands.
func postgresProperties(connStr string) map[string]string {
	pairs, err := connstr.ParseKeyValue(connStr)
	if err != nil {
		return nil
	}
	names := map[string]string{"host": "HOST", "port": "PORT", "username": "USERNAME", "password": "PASSWORD", "database": "DATABASENAME"}
	props := map[string]string{}
	for _, p := range pairs {
		if prop, ok := names[connstr.NormalizeKey(p.Key)]; ok {
			props[prop] = p.Value
		}
	}
	return props
}

// redisProperties splits a StackExchange.Redis connection string into
// Aspire 13's per-property variables (HOST, PORT, PASSWORD, URI).
func redisProperties(connStr string) map[string]string {
	r, err := connstr.ParseRedis(connStr)
	if err != nil {
		return nil
	}
	props := map[string]string{}
	host, port, err := net.SplitHostPort(r.Endpoints[0])
	if err != nil {
		return nil
	}
	props["HOST"], props["PORT"] = host, port
	u := url.URL{Scheme: "redis", Host: r.Endpoints[0]}
	for _, o := range r.Options {
		if strings.EqualFold(o.Key, "password") {
			props["PASSWORD"] = o.Value
			u.User = url.UserPassword("", o.Value)
		}
	}
	props["URI"] = u.String()
	return props
}

// environ merges the launcher's own environment (minus anything the
// AppHost would set itself) with the injected variables.
func (e injected) environ(base []string) []string {
	out := make([]string, 0, len(base)+len(e))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "connectionstrings__") || strings.HasPrefix(lk, "services__") || lk == "port" || lk == "grpc_port" {
			continue
		}
		if _, ok := e[k]; ok {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}

// telemetry adds what WithOtlpExporter() injects when the launcher was
// given an OTLP endpoint: the endpoint, protocol and headers, the service
// name and instance id, and the short development batch delays.
func (e injected) telemetry(base []string, service, instance string) {
	e["OTEL_SERVICE_NAME"] = service
	e["OTEL_RESOURCE_ATTRIBUTES"] = "service.instance.id=" + instance
	if lookupEnv(base, "OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return
	}
	for k, v := range map[string]string{
		"OTEL_BSP_SCHEDULE_DELAY":      "1000",
		"OTEL_BLRP_SCHEDULE_DELAY":     "1000",
		"OTEL_METRIC_EXPORT_INTERVAL":  "1000",
		"OTEL_TRACES_SAMPLER":          "always_on",
		"OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",
	} {
		if lookupEnv(base, k) == "" {
			e[k] = v
		}
	}
}

func (st *stack) start(ctx context.Context, out io.Writer, cfg config, bins map[string]string) error {
	for i := 0; i < cfg.catalogs; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := "catalog-" + strconv.Itoa(i)
		env := injected{"PORT": strconv.Itoa(port)}
		env.connection("db-primary", st.res.primaryConn, postgresProperties)
		if st.res.replicaConn != "" {
			env.connection("db-replica-east", st.res.replicaConn, postgresProperties)
		}
		env.connection("cache", st.res.redisConn, redisProperties)
		env.telemetry(cfg.environ, "catalog", name)
		for k, v := range demoSettings["catalog"] {
			env[k] = v
		}
		st.catalogs = append(st.catalogs, &service{
			name: name, binary: bins["catalog"], port: port,
			env: env.environ(cfg.environ), logPath: filepath.Join(st.dir, name+".log"),
		})
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	env := injected{"PORT": strconv.Itoa(port)}
	for i, c := range st.catalogs {
		// Aspire 8.x-13.1 form, one index per instance ...
		env["services__catalog__http__"+strconv.Itoa(i)] = c.url()
	}
	// ... and the Aspire 13 form, which names one address.
	env["CATALOG_HTTP"] = st.catalogs[0].url()
	usersEnv, err := st.startUsers(cfg, bins)
	if err != nil {
		return err
	}
	for k, v := range usersEnv {
		env[k] = v
	}
	env.telemetry(cfg.environ, "gateway", "gateway-0")
	for k, v := range demoSettings["gateway"] {
		env[k] = v
	}
	st.gateway = &service{
		name: "gateway", binary: bins["gateway"], port: port,
		env: env.environ(cfg.environ), logPath: filepath.Join(st.dir, "gateway.log"),
	}

	for _, s := range st.all() {
		if err := s.start(); err != nil {
			return err
		}
	}
	for _, s := range st.all() {
		if err := s.waitHealthy(ctx, 90*time.Second); err != nil {
			return err
		}
		fmt.Fprintf(out, "· %-9s healthy at %s\n", s.name, s.url())
	}
	return nil
}
