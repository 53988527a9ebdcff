// Package outlier ejects instances of a service that stop answering, as
// Envoy's outlier detection and grpc's outlier_detection balancer do, for
// the HTTP and gRPC clients alike.
//
// A Detector counts, per instance address, the consecutive failures that
// say an instance is gone rather than busy: attempt timeouts and
// connection failures. After Config.ConsecutiveFailures of them in a row
// the instance is ejected for BaseEjectionTime multiplied by the number of
// times it has been ejected (capped at MaxEjectionTime); a success resets
// its count, and an instance that stays healthy for a whole
// BaseEjectionTime after its ejection ends has its multiplier lowered by
// one again, as Envoy does. Ejection is advice to the picker, not a hard
// block: callers skip ejected instances while another is available (see
// Detector.Ejected), so an ejection can never take a whole service away.
//
// Unlike a circuit breaker with a failure ratio and a minimum throughput
// (the standard resilience handler needs 100 calls in 30 s before it
// decides), a detector ejects a silent instance after its first few
// timeouts, however little traffic there is.
package outlier

import (
	"sync"
	"sync/atomic"
	"time"
)

// Defaults, as Envoy's outlier detection (consecutive_5xx 5, base ejection
// time 30 s, max ejection time 300 s).
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionTime     = 300 * time.Second
)

// Config sets a Detector's thresholds. The zero value uses the defaults.
type Config struct {
	// ConsecutiveFailures ejects an instance after this many failures in a
	// row (DefaultConsecutiveFailures); negative disables ejection.
	ConsecutiveFailures int
	// BaseEjectionTime is the first ejection's length, multiplied by the
	// number of times the instance has been ejected
	// (DefaultBaseEjectionTime).
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps one ejection (DefaultMaxEjectionTime, and at
	// least BaseEjectionTime).
	MaxEjectionTime time.Duration
}

// Detector tracks instances by address. It is safe for concurrent use;
// the zero value is not: use New.
type Detector struct {
	threshold int
	base, max time.Duration
	now       func() time.Time
	onEject   func(addr string, d time.Duration)

	mu        sync.Mutex
	instances map[string]*instance

	// tracked is len(instances) and ejected the number of instances with
	// an ejection not yet ended by relaxLocked (some of them may have run
	// out): while they are zero, Success and Ejected return without taking
	// the lock, so a detector costs callers nothing while every instance
	// answers.
	tracked atomic.Int32
	ejected atomic.Int32
}

type instance struct {
	failures     int       // consecutive
	ejections    int       // multiplier
	ejectedUntil time.Time // zero when not ejected
	healthySince time.Time // when the last ejection ended, for lowering the multiplier
}

// New returns a Detector with cfg's thresholds. onEject, if not nil, is
// called (outside the Detector's lock) each time an instance is ejected,
// with the ejection's length: for a log line or a metric.
func New(cfg Config, onEject func(addr string, d time.Duration)) *Detector {
	d := &Detector{
		threshold: cfg.ConsecutiveFailures,
		base:      cfg.BaseEjectionTime,
		max:       cfg.MaxEjectionTime,
		now:       time.Now,
		onEject:   onEject,
		instances: make(map[string]*instance),
	}
	if d.threshold == 0 {
		d.threshold = DefaultConsecutiveFailures
	}
	if d.base <= 0 {
		d.base = DefaultBaseEjectionTime
	}
	if d.max <= 0 {
		d.max = DefaultMaxEjectionTime
	}
	if d.max < d.base {
		d.max = d.base
	}
	return d
}

// maxTracked bounds the instances a Detector remembers; past it, instances
// with nothing to remember are forgotten.
const maxTracked = 4096

// Success records an answer from addr (any answer: an HTTP 500 is an
// answer). It resets addr's consecutive failures.
func (d *Detector) Success(addr string) {
	if d == nil || d.tracked.Load() == 0 {
		return
	}
	d.successSlow(addr)
}

func (d *Detector) successSlow(addr string) {
	d.mu.Lock()
	if in := d.instances[addr]; in != nil {
		in.failures = 0
		d.relaxLocked(in, d.now())
		if in.ejectedUntil.IsZero() && in.ejections == 0 {
			// Nothing left to remember.
			delete(d.instances, addr)
			d.tracked.Add(-1)
		}
	}
	d.mu.Unlock()
}

// Failure records that addr did not answer: an attempt timed out or the
// connection failed. It reports whether this failure ejected addr.
func (d *Detector) Failure(addr string) bool {
	if d == nil || d.threshold < 0 {
		return false
	}
	now := d.now()
	d.mu.Lock()
	in := d.instances[addr]
	if in == nil {
		if len(d.instances) >= maxTracked {
			d.pruneLocked(now)
		}
		in = &instance{}
		d.instances[addr] = in
		d.tracked.Add(1)
	}
	if !in.ejectedUntil.IsZero() && now.Before(in.ejectedUntil) {
		d.mu.Unlock()
		return false // already ejected: a call that went there anyway
	}
	d.relaxLocked(in, now)
	in.failures++
	if in.failures < d.threshold {
		d.mu.Unlock()
		return false
	}
	in.failures = 0
	in.ejections++
	length := time.Duration(in.ejections) * d.base
	if length > d.max || length <= 0 {
		length = d.max
	}
	in.ejectedUntil = now.Add(length)
	in.healthySince = time.Time{}
	d.ejected.Add(1)
	d.mu.Unlock()
	if d.onEject != nil {
		d.onEject(addr, length)
	}
	return true
}

// Ejected reports whether addr is ejected now. Pickers skip an ejected
// instance while another instance is not ejected. While no instance is
// ejected it costs one atomic load.
func (d *Detector) Ejected(addr string) bool {
	if d == nil || d.ejected.Load() == 0 {
		return false
	}
	return d.ejectedSlow(addr)
}

func (d *Detector) ejectedSlow(addr string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.instances[addr]
	if in == nil {
		return false
	}
	d.relaxLocked(in, d.now())
	return !in.ejectedUntil.IsZero()
}

// relaxLocked ends an ejection whose time is up and lowers the multiplier
// of an instance healthy for a whole base ejection time since.
func (d *Detector) relaxLocked(in *instance, now time.Time) {
	if !in.ejectedUntil.IsZero() && !now.Before(in.ejectedUntil) {
		in.healthySince = in.ejectedUntil
		in.ejectedUntil = time.Time{}
		d.ejected.Add(-1)
	}
	for in.ejections > 0 && in.ejectedUntil.IsZero() && !in.healthySince.IsZero() && now.Sub(in.healthySince) >= d.base {
		in.ejections--
		in.healthySince = in.healthySince.Add(d.base)
	}
}

// pruneLocked forgets instances that are neither ejected nor counting.
func (d *Detector) pruneLocked(now time.Time) {
	for addr, in := range d.instances {
		d.relaxLocked(in, now)
		if in.failures == 0 && in.ejectedUntil.IsZero() && in.ejections == 0 {
			delete(d.instances, addr)
			d.tracked.Add(-1)
		}
	}
}

// CapAllows reports whether one more instance may be ejected when
// ejectedOthers of a service's instances are ejected already and
// maxPercent is the cap, as Envoy's max_ejection_percent: at most
// maxPercent of the instances, and one always may be. Clients call it
// before Failure, and do not count a failure the cap refuses, so that a
// machine slowing every instance down cannot eject them all.
func CapAllows(ejectedOthers, instances, maxPercent int) bool {
	return ejectedOthers+1 <= max(1, instances*maxPercent/100)
}
