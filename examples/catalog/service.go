package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/examples/internal/httpapi"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Product is a catalog entry. Prices are numeric(12,2) in Postgres.
type Product struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Price       float64   `json:"price"`
	Stock       int       `json:"stock"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Order is a placed order.
type Order struct {
	ID        int64     `json:"id"`
	ProductID int64     `json:"productId"`
	Quantity  int       `json:"quantity"`
	Total     float64   `json:"total"`
	CreatedAt time.Time `json:"createdAt"`
}

type service struct {
	app      *servicedefaults.App
	db       *cqrs.DB
	products *cache.Cache[Product]
	tracer   trace.Tracer
	created  metric.Int64Counter
	value    metric.Float64Histogram
	instance string
	events   events
}

const schema = `
SELECT pg_advisory_xact_lock(4242);
CREATE TABLE IF NOT EXISTS products (
	id          bigint PRIMARY KEY,
	name        text NOT NULL,
	description text NOT NULL DEFAULT '',
	price       numeric(12,2) NOT NULL CHECK (price >= 0),
	stock       integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
	id              bigserial PRIMARY KEY,
	product_id      bigint NOT NULL REFERENCES products(id),
	quantity        integer NOT NULL CHECK (quantity > 0),
	total           numeric(12,2) NOT NULL,
	idempotency_key text UNIQUE,
	created_at      timestamptz NOT NULL DEFAULT now()
);`

func newService(ctx context.Context, app *servicedefaults.App) (*service, error) {
	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		return nil, err
	}
	// The service also subscribes to Redis itself (the "events" channel),
	// which makes Redis a dependency of its readiness: Degraded keeps an
	// instance in rotation through a Redis outage, served by the cache's
	// L1 and the database.
	rdb, err := aspireredis.Client(ctx, app, "cache", func(c *cache.RedisConfig) {
		c.HealthCheckFailureStatus = health.Degraded
	})
	if err != nil {
		return nil, err
	}
	products, err := aspireredis.NewCache[Product](ctx, app, "cache", "product", func(o *cache.Options) {
		o.TTL = 10 * time.Minute
		o.L1TTL = time.Minute
		o.NegativeTTL = 5 * time.Second
		o.SoftTimeout = 200 * time.Millisecond
	})
	if err != nil {
		return nil, err
	}
	meter := app.Meter("catalog")
	created, err := meter.Int64Counter("orders.created", metric.WithDescription("Orders placed"), metric.WithUnit("{order}"))
	if err != nil {
		return nil, err
	}
	value, err := meter.Float64Histogram("orders.value", metric.WithDescription("Value of placed orders"), metric.WithUnit("{USD}"))
	if err != nil {
		return nil, err
	}
	s := &service{
		app: app, db: db, products: products,
		tracer: app.Tracer("catalog"), created: created, value: value,
		instance: instanceName(),
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	s.events.subscribe(app, rdb)
	return s, nil
}

func instanceName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}

// migrate creates the schema, waiting for the primary while it starts:
// under an AppHost the database may come up after the service.
func (s *service) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	delay := 250 * time.Millisecond
	for {
		_, err := s.db.Exec(ctx, schema)
		if err == nil {
			return nil
		}
		s.app.Logger().WarnContext(ctx, "creating schema failed; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("catalog: creating schema: %w", err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (s *service) routes(mux *http.ServeMux) {
	mux.Handle("GET /products/{id}", cqrs.Middleware(http.HandlerFunc(s.getProduct)))
	mux.Handle("PUT /products/{id}", cqrs.Middleware(http.HandlerFunc(s.putProduct)))
	mux.Handle("POST /orders", cqrs.Middleware(http.HandlerFunc(s.createOrder)))
	mux.HandleFunc("GET /stats", s.stats)
}

func productID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "product id must be a positive integer")
		return 0, false
	}
	return id, true
}

func (s *service) getProduct(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	ctx, span := s.tracer.Start(r.Context(), "GetProduct", trace.WithAttributes(attribute.Int64("product.id", id)))
	defer span.End()

	p, err := s.products.GetOrLoad(ctx, strconv.FormatInt(id, 10), func(ctx context.Context) (Product, error) {
		return s.loadProduct(ctx, id)
	})
	span.SetAttributes(attribute.Bool("product.found", err == nil))
	switch {
	case errors.Is(err, cache.ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("product %d does not exist", id))
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, "loading product failed")
		s.app.Logger().ErrorContext(ctx, "loading product failed", "product.id", id, "error", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the catalog cannot read products right now")
	default:
		w.Header().Set("X-Served-By", s.instance)
		httpapi.WriteJSON(w, http.StatusOK, p)
	}
}

// loadProduct reads from a replica (the DB routes reads, falling back to
// the primary when no replica is in rotation, the session just wrote, or
// the load follows an invalidation whose write no replica has replayed).
func (s *service) loadProduct(ctx context.Context, id int64) (Product, error) {
	var p Product
	err := s.db.QueryRow(ctx,
		`SELECT id, name, description, price::float8, stock, updated_at FROM products WHERE id = $1`, id,
	).Scan(&p.ID, &p.Name, &p.Description, &p.Price, &p.Stock, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, cache.ErrNotFound
	}
	return p, err
}

type productInput struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Price       float64 `json:"price"`
	Stock       int     `json:"stock"`
}

func (s *service) putProduct(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	var in productInput
	if !httpapi.DecodeJSON(w, r, &in) {
		return
	}
	if in.Name == "" || in.Price < 0 || in.Stock < 0 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_request", "name is required; price and stock must not be negative")
		return
	}
	ctx := r.Context()
	var p Product
	// A write with RETURNING, as sqlc's :one: DB.QueryRow sends it to the
	// primary (only statements known to be read-only go to a replica) and
	// records it for read-your-writes once scanned.
	err := s.db.QueryRow(ctx, `
		INSERT INTO products (id, name, description, price, stock) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
			price = EXCLUDED.price, stock = EXCLUDED.stock, updated_at = now()
		RETURNING id, name, description, price::float8, stock, updated_at`,
		id, in.Name, in.Description, in.Price, in.Stock,
	).Scan(&p.ID, &p.Name, &p.Description, &p.Price, &p.Stock, &p.UpdatedAt)
	if err != nil {
		s.app.Logger().ErrorContext(ctx, "saving product failed", "product.id", id, "error", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the catalog cannot save products right now")
		return
	}
	s.invalidate(ctx, p.ID)
	s.app.Logger().InfoContext(ctx, "product saved", "product.id", p.ID, "product.price", p.Price, "product.stock", p.Stock)
	httpapi.WriteJSON(w, http.StatusOK, p)
}

// invalidate removes a product just written from both cache tiers and
// from every instance's L1; the next GET, on any instance, loads it again.
// The request is a read-your-writes session (cqrs.Middleware), so the
// removal carries the WAL position of the write: that load reads a
// replica only once it has replayed the write, else the primary, and a
// lagging replica never puts the old row back into the cache. (Writing
// the value through instead would race with concurrent writes of the same
// product, such as two orders committing in one order and setting the
// cache in the other.) A cache failure is logged, not returned: the
// database has the truth, and the removal is replayed when Redis returns.
func (s *service) invalidate(ctx context.Context, id int64) {
	if err := s.products.Remove(ctx, strconv.FormatInt(id, 10)); err != nil {
		s.app.Logger().WarnContext(ctx, "invalidating cached product failed", "product.id", id, "error", err)
	}
}

type orderInput struct {
	ProductID int64 `json:"productId"`
	Quantity  int   `json:"quantity"`
}

var errOutOfStock = errors.New("not enough stock")

func (s *service) createOrder(w http.ResponseWriter, r *http.Request) {
	var in orderInput
	if !httpapi.DecodeJSON(w, r, &in) {
		return
	}
	if in.ProductID <= 0 || in.Quantity <= 0 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_request", "productId and quantity must be positive")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	ctx := r.Context()

	order, product, replay, err := s.placeOrder(ctx, in, key)
	var pgErr *pgconn.PgError
	const uniqueViolation = "23505"
	if key != "" && errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		// The same key raced in from another request (a retry that
		// overtook the first attempt): that one won; answer with it.
		order, product, replay, err = s.placeOrder(ctx, in, key)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("product %d does not exist", in.ProductID))
		return
	case errors.Is(err, errOutOfStock):
		httpapi.WriteError(w, http.StatusConflict, "out_of_stock", fmt.Sprintf("product %d has fewer than %d in stock", in.ProductID, in.Quantity))
		return
	case err != nil:
		s.app.Logger().ErrorContext(ctx, "placing order failed", "product.id", in.ProductID, "error", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the catalog cannot place orders right now")
		return
	}
	if replay {
		// The same Idempotency-Key again: answer as the first time did.
		httpapi.WriteJSON(w, http.StatusOK, order)
		return
	}
	s.invalidate(ctx, product.ID)
	attrs := metric.WithAttributes(attribute.Int64("product.id", order.ProductID))
	s.created.Add(ctx, 1, attrs)
	s.value.Record(ctx, order.Total, attrs)
	s.app.Logger().InfoContext(ctx, "order created", "order.id", order.ID, "product.id", order.ProductID,
		"order.quantity", order.Quantity, "order.total", order.Total)
	httpapi.WriteJSON(w, http.StatusCreated, order)
}

// placeOrder runs the order in one transaction on the primary: lock the
// product, check and take the stock, insert the order. With an idempotency
// key already used, it returns the earlier order and replay=true.
func (s *service) placeOrder(ctx context.Context, in orderInput, key string) (o Order, p Product, replay bool, err error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return o, p, false, err
	}
	defer tx.Rollback(ctx)

	var idem *string
	if key != "" {
		idem = &key
		err = tx.QueryRow(ctx, `SELECT id, product_id, quantity, total::float8, created_at FROM orders WHERE idempotency_key = $1`, key).
			Scan(&o.ID, &o.ProductID, &o.Quantity, &o.Total, &o.CreatedAt)
		if err == nil {
			return o, p, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return o, p, false, err
		}
	}
	err = tx.QueryRow(ctx,
		`SELECT id, name, description, price::float8, stock, updated_at FROM products WHERE id = $1 FOR UPDATE`, in.ProductID,
	).Scan(&p.ID, &p.Name, &p.Description, &p.Price, &p.Stock, &p.UpdatedAt)
	if err != nil {
		return o, p, false, err
	}
	if p.Stock < in.Quantity {
		return o, p, false, errOutOfStock
	}
	err = tx.QueryRow(ctx,
		`UPDATE products SET stock = stock - $2, updated_at = now() WHERE id = $1 RETURNING stock, updated_at`,
		in.ProductID, in.Quantity,
	).Scan(&p.Stock, &p.UpdatedAt)
	if err != nil {
		return o, p, false, err
	}
	err = tx.QueryRow(ctx, `
		INSERT INTO orders (product_id, quantity, total, idempotency_key) VALUES ($1, $2, $3, $4)
		RETURNING id, product_id, quantity, total::float8, created_at`,
		in.ProductID, in.Quantity, p.Price*float64(in.Quantity), idem,
	).Scan(&o.ID, &o.ProductID, &o.Quantity, &o.Total, &o.CreatedAt)
	if err != nil {
		return o, p, false, err
	}
	return o, p, false, tx.Commit(ctx)
}

// Stats is what GET /stats answers: how the cache tiers and the replicas
// have been doing, for the launcher's scenario and for curious people.
type Stats struct {
	Instance string               `json:"instance"`
	Cache    cache.Stats          `json:"cache"`
	Replicas []cqrs.ReplicaStatus `json:"replicas"`
	Reads    cqrs.ReadStats       `json:"reads"`
	Events   EventStats           `json:"events"`
}

func (s *service) stats(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, Stats{
		Instance: s.instance,
		Cache:    s.products.Stats(),
		Replicas: s.db.Replicas(),
		Reads:    s.db.ReadStats(),
		Events:   s.events.stats(),
	})
}
