package discovery_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/goaspire/goaspire/discovery"
)

// What an Aspire AppHost injects into a service that references "catalog"
// and a database "db", read the way a .NET service would read it.
func ExampleResolver() {
	cfg := discovery.FromMap(map[string]string{
		"services__catalog__http__0":  "http://localhost:5001",
		"services__catalog__https__0": "https://localhost:7001",
		"ConnectionStrings__db":       "Host=localhost;Port=5432;Username=postgres;Password=secret;Database=db",
	})
	r := discovery.NewResolver(cfg)

	for _, raw := range []string{"http://catalog/products/1", "https+http://catalog/products/1", "http://inventory/items"} {
		u, _ := url.Parse(raw)
		resolved, err := r.Resolve(u)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s -> %s\n", raw, resolved)
	}
	_, err := cfg.ConnectionString("orders")
	fmt.Println(err)
	// Output:
	// http://catalog/products/1 -> http://localhost:5001/products/1
	// https+http://catalog/products/1 -> https://localhost:7001/products/1
	// http://inventory/items -> http://inventory/items
	// discovery: connection "orders": not found: set ConnectionStrings__orders, or ORDERS_URI, or ORDERS_HOST and ORDERS_PORT
}

// Layered configuration: appsettings.json, appsettings.{Environment}.json,
// then environment variables, with typed getters whose errors name the key.
func ExampleLoad() {
	cfg, err := discovery.Load(
		discovery.WithDir("testdata/example"),
		discovery.WithEnviron([]string{"DOTNET_ENVIRONMENT=Development", "Aspire__Npgsql__DisableTracing=true"}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	disabled, _ := cfg.Bool("Aspire:Npgsql:DisableTracing", false)
	timeout, _ := cfg.Duration("Aspire:Npgsql:Timeout", 0)
	_, err = cfg.Int("Aspire:Npgsql:MaxConnections", 100)
	fmt.Println(cfg.Environment(), disabled, timeout)
	fmt.Println(err)
	// Output:
	// Development true 15s
	// config key "Aspire:Npgsql:MaxConnections": invalid integer "lots"
}

// NewTransport lets a plain http.Client call services by their logical
// names: each request is resolved against the endpoints the AppHost
// injected, here one instance of "catalog" standing in for a real one.
func ExampleNewTransport() {
	catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "catalog got %s", r.URL.Path)
	}))
	defer catalog.Close()

	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": catalog.URL})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: discovery.NewTransport(discovery.NewResolver(cfg), base)}

	resp, err := client.Get("https+http://catalog/products/1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// catalog got /products/1
}

// Aspire 13.6 deploy targets (Kubernetes, App Service) inject a connection
// string under its portable alias only: "my-db" arrives as
// ConnectionStrings__my_db. Connection reads the logical name first, then
// the alias, and a Connection never prints its password.
func ExampleConfig_Connection() {
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__my_db": "Host=db;Username=app;Password=secret;Database=orders",
	})
	conn, err := cfg.Connection("my-db")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(discovery.PortableName("my-db"), conn.ConnectionStringKey)
	fmt.Printf("%#v\n", conn)
	_, err = cfg.Connection("other-db")
	fmt.Println(err)
	// Output:
	// my_db ConnectionStrings:my_db
	// discovery.Connection{Name:"my-db", ConnectionString:"Host=db;Username=app;Password=***;Database=orders", Host:"", Port:"", Username:"", Password:"", DatabaseName:"", URI:"", ConnectionStringKey:"ConnectionStrings:my_db", PropertyPrefix:""}
	// discovery: connection "other-db": not found: set ConnectionStrings__other-db or ConnectionStrings__other_db, or OTHER_DB_URI, or OTHER_DB_HOST and OTHER_DB_PORT
}

// DNS discovery inside a Kubernetes pod: "http://basket" is whatever the
// SRV records _default._tcp.basket.{namespace}.svc.cluster.local name,
// refreshed every minute. Close stops the refreshes.
func ExampleResolver_kubernetes() {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:ServiceDiscovery:DnsSrv:Enabled": "true",
		// Inferred inside a pod; set here for the example.
		"Aspire:ServiceDiscovery:DnsSrv:QuerySuffix": "shop.svc.cluster.local",
	})
	r := discovery.NewResolver(cfg)
	defer r.Close()

	client := &http.Client{Transport: discovery.NewTransport(r, nil)}
	resp, err := client.Get("http://basket/items")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

// Every goaspire error about a configuration value is a *KeyError (or
// wraps one), so one errors.As finds the key at fault, whichever package
// read it. The value is never quoted when the key names a secret.
func ExampleKeyError() {
	cfg := discovery.FromMap(map[string]string{
		"Aspire__Npgsql__db__MaxConnections": "lots",
		"PORT":                               "70000",
	})
	_, err1 := cfg.Section("Aspire:Npgsql:db").Int("MaxConnections", 100)
	_, err2 := cfg.ListenAddress()
	for _, err := range []error{err1, err2} {
		var keyErr *discovery.KeyError
		if errors.As(err, &keyErr) {
			fmt.Println(keyErr.Key)
		}
	}
	// Output:
	// Aspire:Npgsql:db:MaxConnections
	// PORT
}

// Kubernetes mounts a Secret as a directory of files; setting
// GOASPIRE_KEY_PER_FILE_DIRECTORY (or passing WithKeyPerFile) makes Load
// read it, a file ConnectionStrings__db becoming ConnectionStrings:db.
// Environment variables still win over the files.
func ExampleWithKeyPerFile() {
	cfg, err := discovery.Load(discovery.WithKeyPerFile("/run/secrets/shop"))
	if err != nil {
		log.Fatal(err) // names GOASPIRE_KEY_PER_FILE_DIRECTORY and the path
	}
	dsn, err := cfg.ConnectionString("db")
	if err != nil {
		log.Fatal(err)
	}
	_ = dsn
}
