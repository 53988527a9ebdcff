package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/examples/internal/httpapi"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults"
)

const (
	queue     = "jobs"
	deadQueue = "jobs-dead"
)

const schema = `
SELECT pg_advisory_xact_lock(4343);
CREATE TABLE IF NOT EXISTS jobs (
	id           text PRIMARY KEY,
	input        bigint NOT NULL,
	status       text NOT NULL DEFAULT 'queued',
	result       bigint,
	worker       text,
	trace_id     text,
	created_at   timestamptz NOT NULL DEFAULT now(),
	completed_at timestamptz
);
-- One row per job that took effect: the idempotency record.
CREATE TABLE IF NOT EXISTS job_effects (
	job_id text PRIMARY KEY REFERENCES jobs(id),
	amount bigint NOT NULL
);
-- What the effects add up to; a job applied twice would show here.
CREATE TABLE IF NOT EXISTS job_totals (
	id        int PRIMARY KEY,
	processed bigint NOT NULL,
	amount    bigint NOT NULL
);
INSERT INTO job_totals VALUES (1, 0, 0) ON CONFLICT DO NOTHING;`

// job is the message the API publishes.
type job struct {
	ID    string `json:"id"`
	Input int64  `json:"input"`
}

type service struct {
	app      *servicedefaults.App
	db       *cqrs.Pool
	mq       *rabbitmq.Client
	instance string
	delay    time.Duration

	processed, duplicates, redelivered atomic.Int64
}

func newService(ctx context.Context, app *servicedefaults.App) (*service, error) {
	db, err := aspirepostgres.Pool(ctx, app, "db")
	if err != nil {
		return nil, err
	}
	mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
	if err != nil {
		return nil, err
	}
	delay := 20 * time.Millisecond
	if v := os.Getenv("JOBS_WORK_DELAY"); v != "" {
		if delay, err = time.ParseDuration(v); err != nil || delay < 0 {
			return nil, fmt.Errorf("JOBS_WORK_DELAY=%q: want a duration such as 20ms", v)
		}
	}
	s := &service{app: app, db: db, mq: mq, delay: delay, instance: os.Getenv("OTEL_SERVICE_NAME")}
	if id := os.Getenv("JOBS_INSTANCE"); id != "" {
		s.instance = id
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := db.Exec(ctx, schema); err != nil {
		return nil, fmt.Errorf("creating the schema: %w", err)
	}
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: queue, DeadLetterQueue: deadQueue}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *service) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /process", s.process)
	mux.HandleFunc("GET /jobs/summary", s.summary)
	mux.HandleFunc("GET /jobs/{id}", s.getJob)
}

// process records the job as queued, publishes it with a confirm and
// answers 202 with where to find the result.
func (s *service) process(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Input int64 `json:"input"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&in); err != nil || in.Input < 0 || in.Input > 1_000_000 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_request", `want {"input": n} with 0 <= n <= 1000000`)
		return
	}
	j := job{ID: rand.Text(), Input: in.Input}
	if _, err := s.db.Exec(r.Context(), `INSERT INTO jobs (id, input) VALUES ($1, $2)`, j.ID, j.Input); err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "could not record the job")
		return
	}
	// Publish waits for the broker's confirm, across a broker restart
	// if need be; the request's deadline bounds it. Mandatory: a job the
	// queue did not take fails the request rather than vanish.
	if err := rabbitmq.PublishJSON(r.Context(), s.mq, "", queue, j, rabbitmq.Message{MessageID: j.ID, Mandatory: true}); err != nil {
		s.app.Logger().ErrorContext(r.Context(), "publishing a job failed", "job", j.ID, "error", err)
		_, _ = s.db.Exec(context.WithoutCancel(r.Context()), `UPDATE jobs SET status = 'failed' WHERE id = $1 AND status = 'queued'`, j.ID)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "could not queue the job")
		return
	}
	w.Header().Set("Location", "/jobs/"+j.ID)
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"id": j.ID, "status": "queued"})
}

// jobView is what GET /jobs/{id} answers.
type jobView struct {
	ID          string     `json:"id"`
	Input       int64      `json:"input"`
	Status      string     `json:"status"`
	Result      *int64     `json:"result,omitempty"`
	Worker      *string    `json:"worker,omitempty"`
	TraceID     *string    `json:"traceId,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
}

func (s *service) getJob(w http.ResponseWriter, r *http.Request) {
	var v jobView
	err := s.db.QueryRow(r.Context(), `SELECT id, input, status, result, worker, trace_id, created_at, completed_at FROM jobs WHERE id = $1`,
		r.PathValue("id")).Scan(&v.ID, &v.Input, &v.Status, &v.Result, &v.Worker, &v.TraceID, &v.CreatedAt, &v.CompletedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such job")
	case err != nil:
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "could not read the job")
	default:
		httpapi.WriteJSON(w, http.StatusOK, v)
	}
}

// summaryView counts jobs and effects, for the demo's checks.
type summaryView struct {
	Jobs          int64 `json:"jobs"`
	Done          int64 `json:"done"`
	Effects       int64 `json:"effects"`
	Processed     int64 `json:"processed"`     // job_totals.processed
	Amount        int64 `json:"amount"`        // job_totals.amount
	ExpectedTotal int64 `json:"expectedTotal"` // the sum of every done job's input
}

func (s *service) summary(w http.ResponseWriter, r *http.Request) {
	var v summaryView
	err := s.db.QueryRow(r.Context(), `SELECT
		(SELECT count(*) FROM jobs),
		(SELECT count(*) FROM jobs WHERE status = 'done'),
		(SELECT count(*) FROM job_effects),
		(SELECT processed FROM job_totals WHERE id = 1),
		(SELECT amount FROM job_totals WHERE id = 1),
		(SELECT coalesce(sum(input), 0) FROM jobs WHERE status = 'done')`).
		Scan(&v.Jobs, &v.Done, &v.Effects, &v.Processed, &v.Amount, &v.ExpectedTotal)
	if err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "could not read the summary")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
}

// startWorker consumes the queue as a supervised background worker: the
// App restarts it if it fails and, at shutdown, lets the jobs in hand
// finish and be acknowledged before closing the connection.
func (s *service) startWorker(mux *http.ServeMux) {
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{
			"instance": s.instance, "processed": s.processed.Load(), "duplicates": s.duplicates.Load(),
			"redelivered": s.redelivered.Load(),
		})
	})
	s.app.Go("jobs-consumer", func(ctx context.Context) error {
		return rabbitmq.ConsumeJSON(ctx, s.mq, queue, rabbitmq.ConsumeOptions{Concurrency: 4}, s.handle)
	})
}

// handle processes one job. Its effect and its result are written in one
// transaction guarded by the job's effect row, so a second delivery of the
// same job changes nothing.
func (s *service) handle(ctx context.Context, j job, d rabbitmq.Delivery) error {
	if j.ID == "" {
		return rabbitmq.Permanent(errors.New("job without id"))
	}
	if d.Redelivered {
		s.redelivered.Add(1) // another consumer had it and did not acknowledge it
	}
	result := work(j.Input)
	select { // the job's "work"
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	traceID := trace.SpanContextFromContext(ctx).TraceID().String()
	applied := false
	err := pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO job_effects (job_id, amount) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING`, j.ID, j.Input)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // done before: a redelivery
		}
		applied = true
		if _, err := tx.Exec(ctx, `UPDATE job_totals SET processed = processed + 1, amount = amount + $1 WHERE id = 1`, j.Input); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE jobs SET status = 'done', result = $2, worker = $3, trace_id = $4, completed_at = now() WHERE id = $1`,
			j.ID, result, s.instance, traceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("recording job %s: %w", j.ID, err)
	}
	if applied {
		s.processed.Add(1)
	} else {
		s.duplicates.Add(1)
		s.app.Logger().InfoContext(ctx, "job delivered again; already done", "job", j.ID, "redelivered", d.Redelivered)
	}
	return nil
}

// work is the job's computation: the sum of the squares up to n.
func work(n int64) int64 {
	var sum int64
	for i := int64(1); i <= n; i++ {
		sum += i * i
	}
	return sum
}
