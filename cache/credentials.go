package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/goaspire/goaspire/internal/fallback"
)

// RedisCredentials are what a Redis connection authenticates with: an ACL
// user name (empty for the default user) and a password or access token
// that may expire.
//
// String, GoString and LogValue never show Password.
type RedisCredentials struct {
	Username string
	Password string
	// ExpiresOn is when Password stops being accepted; zero means never.
	ExpiresOn time.Time
}

// String describes the credentials without the password.
func (c RedisCredentials) String() string {
	exp := "never"
	if !c.ExpiresOn.IsZero() {
		exp = c.ExpiresOn.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("cache.RedisCredentials{Username: %q, Password: [redacted], ExpiresOn: %s}", c.Username, exp)
}

// GoString is String, for %#v.
func (c RedisCredentials) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the password.
func (c RedisCredentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username), slog.Time("expires_on", c.ExpiresOn))
}

// CredentialsFunc fetches the credentials of a Redis connection, for
// instance an access token from an identity provider. It is called when
// the first connection is made and again before the credentials it
// returned expire; ctx bounds each call. Its errors must not contain the
// secret.
type CredentialsFunc func(ctx context.Context) (RedisCredentials, error)

// ErrCredentials is matched (errors.Is) by the errors of a client whose
// CredentialsFunc failed: the dial that could not get credentials, and the
// health check while no valid credentials are held.
var ErrCredentials = errors.New("credentials unavailable")

// CredentialsProviderOptions tune a [CredentialsProvider]; the zero value
// takes the defaults named in each comment.
type CredentialsProviderOptions struct {
	// Name names the client in logs and errors (default "redis").
	Name string
	// Logger reports refresh failures, never the secret (default
	// slog.Default()).
	Logger *slog.Logger
	// FetchTimeout bounds each call of the CredentialsFunc (default 30 s).
	FetchTimeout time.Duration
	// RefreshRatio is the part of the credentials' lifetime after which
	// they are refreshed (default 0.75: a token valid for an hour is
	// replaced after 45 minutes). It must be in (0, 1).
	RefreshRatio float64
	// MinRetry is the least delay between two fetches: the first delay of
	// the exponential backoff after a failure, and the least wait when
	// the fetch returned the credentials already held (default 1 s).
	MinRetry time.Duration
	// MaxRetry caps the backoff between failed fetches (default 30 s).
	MaxRetry time.Duration
}

// CredentialsProvider is a go-redis auth.StreamingCredentialsProvider over
// a CredentialsFunc: it fetches credentials for the first connection,
// refreshes them before they expire (after RefreshRatio of their
// lifetime, retrying failures with exponential backoff) and hands the new
// ones to every live connection, which go-redis re-authenticates in place
// (AUTH on the same connection, without dropping the pool).
//
// It refreshes only while connections are subscribed: go-redis unsubscribes
// a connection when it closes it. go-redis (v9.22) does not unsubscribe a
// connection whose handshake failed after it subscribed (credentials the
// server refused), so close the provider after its client: Close stops the
// refresher whatever is subscribed. Set it in
// redis.Options.StreamingCredentialsProvider, or set
// RedisConfig.Credentials and let NewRedis make it ([CredentialsProviderOf]
// returns it then).
//
// go-redis re-authenticates a pooled connection when the pool takes it
// back or skips it while handing out connections. It does not
// re-authenticate pub/sub connections (they are not pooled); the
// subscriptions of this module (redisevents.Subscribe and PSubscribe, the
// caches' invalidation bus; not on a cluster client, whose new connection
// could land on another node) watch [CredentialsProvider.Rotated] instead
// and, at each rotation, move to a new connection authenticated with the
// new credentials before closing the old one, without losing or
// repeating a message (see redisevents.Subscribe). A PubSub of one's own
// keeps its first credentials: a server that enforces the expiry (Azure
// Managed Redis closes connections not re-authenticated in time) closes
// it, and go-redis reconnects it, losing what was published in between.
type CredentialsProvider struct {
	fetch CredentialsFunc
	opt   CredentialsProviderOptions
	log   *slog.Logger

	fetchMu sync.Mutex // serializes fetches

	mu        sync.Mutex
	cur       RedisCredentials
	have      bool
	obtained  time.Time // when cur was fetched
	lastErr   error     // the last fetch's error, nil after a success
	listeners map[auth.CredentialsListener]struct{}
	rotated   chan struct{} // closed at the next rotation; nil until asked for
	stop      chan struct{} // closed to stop the refresher; nil while none runs
	done      chan struct{} // closed when the refresher has returned
}

// NewCredentialsProvider returns a provider over fetch.
func NewCredentialsProvider(fetch CredentialsFunc, opt CredentialsProviderOptions) *CredentialsProvider {
	if opt.Name == "" {
		opt.Name = "redis"
	}
	if opt.FetchTimeout <= 0 {
		opt.FetchTimeout = 30 * time.Second
	}
	if opt.RefreshRatio <= 0 || opt.RefreshRatio >= 1 {
		opt.RefreshRatio = 0.75
	}
	if opt.MinRetry <= 0 {
		opt.MinRetry = time.Second
	}
	if opt.MaxRetry < opt.MinRetry {
		opt.MaxRetry = max(30*time.Second, opt.MinRetry)
	}
	return &CredentialsProvider{
		fetch:     fetch,
		opt:       opt,
		log:       fallback.Logger(opt.Logger).With("redis", opt.Name),
		listeners: map[auth.CredentialsListener]struct{}{},
	}
}

var _ auth.StreamingCredentialsProvider = (*CredentialsProvider)(nil)

// Subscribe implements auth.StreamingCredentialsProvider: go-redis calls it
// for each new connection. It returns the credentials held, fetching them
// first when none are held or they have expired.
func (p *CredentialsProvider) Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	if l == nil {
		return nil, nil, errors.New("cache: CredentialsProvider.Subscribe: nil listener")
	}
	c, err := p.valid()
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	p.listeners[l] = struct{}{}
	if p.stop == nil {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.refresh(p.stop, p.done)
	}
	p.mu.Unlock()
	var once sync.Once
	unsubscribe := func() error {
		once.Do(func() { p.unsubscribe(l) })
		return nil
	}
	return auth.NewBasicCredentials(c.Username, c.Password), unsubscribe, nil
}

func (p *CredentialsProvider) unsubscribe(l auth.CredentialsListener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.listeners, l)
	if len(p.listeners) == 0 && p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
}

// Credentials returns the credentials held, fetching them first when none
// are held or they have expired.
func (p *CredentialsProvider) Credentials(ctx context.Context) (RedisCredentials, error) {
	return p.validCtx(ctx)
}

func (p *CredentialsProvider) valid() (RedisCredentials, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opt.FetchTimeout)
	defer cancel()
	return p.validCtx(ctx)
}

func (p *CredentialsProvider) validCtx(ctx context.Context) (RedisCredentials, error) {
	if c, ok := p.held(); ok {
		return c, nil
	}
	p.fetchMu.Lock()
	defer p.fetchMu.Unlock()
	if c, ok := p.held(); ok { // fetched while this call waited
		return c, nil
	}
	c, _, err := p.fetchLocked(ctx)
	if err != nil {
		return RedisCredentials{}, err
	}
	if expired(c, time.Now()) {
		return RedisCredentials{}, fmt.Errorf("cache: redis %q: %w: the credentials fetched expired at %s", p.opt.Name, ErrCredentials, c.ExpiresOn.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// held returns the credentials held if they have not expired.
func (p *CredentialsProvider) held() (RedisCredentials, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur, p.have && !expired(p.cur, time.Now())
}

func expired(c RedisCredentials, now time.Time) bool {
	return !c.ExpiresOn.IsZero() && !now.Before(c.ExpiresOn)
}

// fetchLocked calls the CredentialsFunc (p.fetchMu held) and stores what it
// returned; changed reports whether the secret or user changed.
func (p *CredentialsProvider) fetchLocked(ctx context.Context) (c RedisCredentials, changed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.opt.FetchTimeout)
	defer cancel()
	if p.fetch == nil {
		err = errors.New("no CredentialsFunc")
	} else {
		c, err = p.fetch(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = fmt.Errorf("cache: redis %q: %w: %w", p.opt.Name, ErrCredentials, err)
		return RedisCredentials{}, false, p.lastErr
	}
	changed = !p.have || c.Username != p.cur.Username || c.Password != p.cur.Password
	p.cur, p.have, p.lastErr = c, true, nil
	if changed {
		p.obtained = time.Now()
	}
	return c, changed, nil
}

// Err returns the last fetch's error, matching ErrCredentials, or nil
// when it succeeded (or none was made yet). The error says until when the
// credentials held, if any, remain valid.
func (p *CredentialsProvider) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr == nil {
		return nil
	}
	if p.have && !expired(p.cur, time.Now()) {
		if p.cur.ExpiresOn.IsZero() {
			return fmt.Errorf("%w (the credentials held do not expire)", p.lastErr)
		}
		return fmt.Errorf("%w (the credentials held are valid until %s)", p.lastErr, p.cur.ExpiresOn.UTC().Format(time.RFC3339))
	}
	return p.lastErr
}

// untilRefresh is how long until the credentials held should be
// replaced: after RefreshRatio of their lifetime, at least MinRetry from
// now; negative when they never expire.
func (p *CredentialsProvider) untilRefresh() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.have {
		return p.opt.MinRetry
	}
	if p.cur.ExpiresOn.IsZero() {
		return -1
	}
	life := p.cur.ExpiresOn.Sub(p.obtained)
	at := p.obtained.Add(time.Duration(float64(life) * p.opt.RefreshRatio))
	return max(time.Until(at), p.opt.MinRetry)
}

// refresh runs while connections are subscribed: it replaces the
// credentials before they expire and hands new ones to the listeners.
func (p *CredentialsProvider) refresh(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	failures := 0
	wait := p.untilRefresh()
	for {
		if wait < 0 {
			<-stop
			return
		}
		if !sleep(stop, wait) {
			return
		}
		p.fetchMu.Lock()
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		c, changed, err := p.fetchLocked(ctx)
		cancel()
		p.fetchMu.Unlock()
		select {
		case <-stop:
			return
		default:
		}
		switch {
		case err != nil:
			failures++
			wait = p.backoff(failures)
			p.log.Warn("redis credentials refresh failed; retrying", "error", err, "attempt", failures, "retry_in", wait)
		case !changed && !c.ExpiresOn.IsZero():
			// The source returned what is held (a token cache that
			// renews only close to expiry): ask again after half the
			// time left.
			failures = 0
			wait = max(time.Until(c.ExpiresOn)/2, p.opt.MinRetry)
		case !changed:
			failures, wait = 0, -1
		default:
			if failures > 0 {
				p.log.Info("redis credentials refreshed after failures", "attempts", failures+1)
			}
			failures = 0
			p.log.Debug("redis credentials refreshed", "credentials", c)
			p.notify(c)
			wait = p.untilRefresh()
		}
	}
}

// sleep waits d and reports true, or false once stop is closed.
func sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// backoff is the delay after the n-th consecutive failure: exponential
// from MinRetry, capped at MaxRetry, with full jitter on its upper half.
func (p *CredentialsProvider) backoff(n int) time.Duration {
	d := min(p.opt.MinRetry<<min(n-1, 20), p.opt.MaxRetry)
	return d/2 + rand.N(d/2+1)
}

// notify hands c to every listener.
func (p *CredentialsProvider) notify(c RedisCredentials) {
	p.mu.Lock()
	ls := make([]auth.CredentialsListener, 0, len(p.listeners))
	for l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	creds := auth.NewBasicCredentials(c.Username, c.Password)
	for _, l := range ls {
		l.OnNext(creds)
	}
	p.mu.Lock()
	if p.rotated != nil {
		close(p.rotated)
		p.rotated = nil
	}
	p.mu.Unlock()
}

// Rotated returns a channel closed when the provider next hands new
// credentials to the connections (after a refresh that changed them), for
// connections go-redis does not re-authenticate: Subscribe and PSubscribe
// of package redisevents and the invalidation subscription of the caches
// watch it and move their subscriptions to a connection authenticated
// with the new credentials before the old ones expire. Call it again
// after it fired for the next rotation.
func (p *CredentialsProvider) Rotated() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rotated == nil {
		p.rotated = make(chan struct{})
	}
	return p.rotated
}

// Close stops the refresher, if running, waits for it, and forgets the
// subscribed connections (see CredentialsProvider on why go-redis may not
// have unsubscribed them all). The provider may be used again after Close.
func (p *CredentialsProvider) Close() error {
	p.mu.Lock()
	stop, done := p.stop, p.done
	if stop != nil {
		close(stop)
		p.stop = nil
	}
	p.listeners = map[auth.CredentialsListener]struct{}{}
	p.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// CredentialsProviderOf returns the CredentialsProvider of rdb's options:
// the one NewRedis made for RedisConfig.Credentials, or one the caller set;
// nil when there is none. Close it after closing rdb.
func CredentialsProviderOf(rdb redis.UniversalClient) *CredentialsProvider {
	var sp auth.StreamingCredentialsProvider
	switch c := rdb.(type) {
	case *redis.Client:
		sp = c.Options().StreamingCredentialsProvider
	case *redis.ClusterClient:
		sp = c.Options().StreamingCredentialsProvider
	}
	p, _ := sp.(*CredentialsProvider)
	return p
}
