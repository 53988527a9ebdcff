package servicedefaultstest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// The test of a user's handler that the package documentation shows: a
// real Postgres and Redis, the App's own clients, a request over HTTP.

type product struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func productHandler(db *cqrs.DB, products *cache.Cache[product]) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		p, err := products.GetOrLoad(r.Context(), id, func(ctx context.Context) (product, error) {
			var p product
			err := db.QueryRow(ctx, "SELECT id, name FROM products WHERE id = $1", id).Scan(&p.ID, &p.Name)
			if errors.Is(err, pgx.ErrNoRows) {
				return p, cache.ErrNotFound
			}
			return p, err
		})
		switch {
		case errors.Is(err, cache.ErrNotFound):
			http.NotFound(w, r)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			_ = json.NewEncoder(w).Encode(p)
		}
	})
	return mux
}

func TestHandlerWithDBAndCache(t *testing.T) {
	pg := testserver.NewPostgres(t)
	rd := testserver.NewRedis(t)
	ctx := context.Background()
	if err := pg.Exec(ctx, "CREATE TABLE products (id text PRIMARY KEY, name text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "INSERT INTO products VALUES ('1', 'kettle')"); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	app := servicedefaultstest.NewUnstarted(t, mux, map[string]string{
		"ConnectionStrings:db":    pg.ConnectionString(),
		"ConnectionStrings:cache": rd.ConnectionString(),
	})
	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	products, err := aspireredis.NewCache[product](ctx, app, "cache", "product")
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", productHandler(db, products))
	app.Start()

	get := func(path string) (int, product) {
		t.Helper()
		resp, err := http.Get(app.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p product
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, p
	}
	if code, p := get("/products/1"); code != http.StatusOK || p.Name != "kettle" {
		t.Fatalf("GET /products/1 = %d %+v, want 200 kettle", code, p)
	}
	// The second read comes from the cache: the row is gone from the
	// database, the answer is still there.
	if err := pg.Exec(ctx, "DELETE FROM products"); err != nil {
		t.Fatal(err)
	}
	if code, p := get("/products/1"); code != http.StatusOK || p.Name != "kettle" {
		t.Fatalf("GET /products/1 from the cache = %d %+v", code, p)
	}
	if code, _ := get("/products/2"); code != http.StatusNotFound {
		t.Fatalf("GET /products/2 = %d, want 404", code)
	}
	// The App registered the clients' checks.
	resp, err := http.Get(app.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health = %d", resp.StatusCode)
	}
	names := map[string]bool{}
	for _, c := range app.Health().Checks() {
		names[c.Name] = true
	}
	if !names["postgres:db"] || !names["redis:cache"] {
		t.Fatalf("checks %v, want postgres:db and redis:cache", names)
	}
}
