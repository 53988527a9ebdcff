package aspiregrpc

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	"github.com/goaspire/goaspire/internal/outlier"
)

// balancerName is the load-balancing policy of Client's connections: round robin over the instances whose connection is ready,
// as grpc's round_robin, that skips the instances the outlier detector
// ejected and, for a retried call, the instances the call already tried,
// while another ready instance is left.
const balancerName = "goaspire_round_robin"

// grpc-go's balancer registry is a plain map that must only be written
// before any ClientConn reads it, that is at program initialization: the
// builder registered here is stateless (every connection's state lives in
// its own balancer and in the grpcInstances its resolver hands over).
func init() { balancer.Register(grpcBalancerBuilder{}) }

type grpcBalancerBuilder struct{}

func (grpcBalancerBuilder) Name() string { return balancerName }

func (grpcBalancerBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &grpcBalancer{}
	b.insts.Store(newGRPCInstances(nil, 0))
	// One pick_first child per endpoint, as round_robin: its children
	// reconnect on their own, and its state tells which ones are ready.
	b.Balancer = endpointsharding.NewBalancer(grpcBalancerCC{cc, b}, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// grpcBalancer is endpointsharding (grpc's round_robin without its
// picker) with grpcPicker over its ready children.
type grpcBalancer struct {
	balancer.Balancer
	insts atomic.Pointer[grpcInstances]
}

// UpdateClientConnState takes the connection's grpcInstances from the
// resolver state (see grpcInstancesResolver) before passing the
// endpoints on.
func (b *grpcBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if in, ok := s.ResolverState.Attributes.Value(grpcInstancesKey{}).(*grpcInstances); ok {
		b.insts.Store(in)
	}
	b.insts.Load().keep(s.ResolverState.Endpoints)
	return b.Balancer.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

// grpcBalancerCC replaces endpointsharding's picker over ready children
// with a grpcPicker.
type grpcBalancerCC struct {
	balancer.ClientConn
	b *grpcBalancer
}

func (cc grpcBalancerCC) UpdateState(s balancer.State) {
	if s.ConnectivityState == connectivity.Ready {
		insts := cc.b.insts.Load()
		p := &grpcPicker{}
		for _, child := range endpointsharding.ChildStatesFromPicker(s.Picker) {
			if child.State.ConnectivityState != connectivity.Ready || len(child.Endpoint.Addresses) == 0 {
				continue
			}
			p.ready = append(p.ready, grpcReady{picker: child.State.Picker, inst: insts.get(child.Endpoint.Addresses[0].Addr)})
		}
		if len(p.ready) > 0 {
			p.next.Store(rand.Uint32())
			s.Picker = p
		}
	}
	cc.ClientConn.UpdateState(s)
}

// grpcPicker picks the ready instances in turn, skipping an instance that
// is ejected or that the call already tried while another is neither.
type grpcPicker struct {
	ready []grpcReady
	next  atomic.Uint32
}

type grpcReady struct {
	picker balancer.Picker // the endpoint's pick_first
	inst   *grpcInstance
}

func (p *grpcPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	c, _ := info.Ctx.Value(grpcCallKey{}).(*grpcCall)
	n := uint32(len(p.ready))
	start := p.next.Add(1)
	best, bestRank := uint32(0), 4
	var now int64
	for i := uint32(0); i < n; i++ {
		k := (start + i) % n
		in := p.ready[k].inst
		rank := 0
		if in.ejected(&now) {
			rank = 2 // an instance known to be gone comes last
		}
		if c != nil && c.tried(in) {
			rank++
		}
		if rank < bestRank {
			best, bestRank = k, rank
			if rank == 0 {
				break
			}
		}
	}
	r := p.ready[best]
	res, err := r.picker.Pick(info)
	if err == nil && c != nil {
		c.picked, c.answered = r.inst, false
		if res.Done == nil {
			res.Done = c.doneFn
		} else {
			done := res.Done
			res.Done = func(di balancer.DoneInfo) { c.finished(di); done(di) }
		}
	}
	return res, err
}

// grpcInstancesKey keys a connection's grpcInstances in its resolver
// state's attributes.
type grpcInstancesKey struct{}

// grpcInstancesResolver is the resolver of one Client connection: a
// grpcresolver.Builder over the App's resolver, whose states carry the connection's
// grpcInstances to its balancer.
type grpcInstancesResolver struct {
	resolver.Builder
	insts *grpcInstances
}

func (r grpcInstancesResolver) Build(t resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	return r.Builder.Build(t, grpcInstancesCC{cc, r.insts}, opts)
}

type grpcInstancesCC struct {
	resolver.ClientConn
	insts *grpcInstances
}

func (cc grpcInstancesCC) UpdateState(s resolver.State) error {
	s.Attributes = s.Attributes.WithValue(grpcInstancesKey{}, cc.insts)
	return cc.ClientConn.UpdateState(s)
}

// grpcInstances are the instances of one connection by address, with the
// outlier detector that ejects them (nil: none is ejected) and the share
// of them that may be ejected at once, in percent.
type grpcInstances struct {
	detector   *outlier.Detector
	maxPercent int
	mu         sync.Mutex
	byAddr     map[string]*grpcInstance
}

func newGRPCInstances(d *outlier.Detector, maxPercent int) *grpcInstances {
	return &grpcInstances{detector: d, maxPercent: maxPercent, byAddr: map[string]*grpcInstance{}}
}

// mayEject reports whether in may be ejected without ejecting more than
// maxPercent of the instances (outlier.CapAllows).
func (s *grpcInstances) mayEject(in *grpcInstance) bool {
	var now int64
	if in.ejected(&now) {
		return true // (Failure ignores it)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ejected := 0
	for _, other := range s.byAddr {
		if other != in && other.ejected(&now) {
			ejected++
		}
	}
	return outlier.CapAllows(ejected, len(s.byAddr), s.maxPercent)
}

func (s *grpcInstances) get(addr string) *grpcInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.byAddr[addr]
	if in == nil {
		in = &grpcInstance{addr: addr, set: s}
		s.byAddr[addr] = in
	}
	return in
}

// keep forgets the instances no longer resolved.
func (s *grpcInstances) keep(eps []resolver.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make(map[string]bool, len(eps))
	for _, ep := range eps {
		for _, a := range ep.Addresses {
			live[a.Addr] = true
		}
	}
	for addr := range s.byAddr {
		if !live[addr] {
			delete(s.byAddr, addr)
		}
	}
}

// ejected records an ejection of addr for d (the detector's onEject).
func (s *grpcInstances) ejected(addr string, d time.Duration) {
	s.get(addr).ejectedUntil.Store(time.Now().Add(d).UnixNano())
}

// grpcInstance is one instance's state as pickers read it without a lock.
type grpcInstance struct {
	addr string
	set  *grpcInstances
	// ejectedUntil is the end of the instance's ejection, in Unix
	// nanoseconds; 0 when it was never ejected.
	ejectedUntil atomic.Int64
	// suspect is set while the detector counts failures of the instance,
	// so that a success is reported to it only then.
	suspect atomic.Bool
}

// ejected says whether the instance is ejected; *now caches the time.
func (in *grpcInstance) ejected(now *int64) bool {
	until := in.ejectedUntil.Load()
	if until == 0 {
		return false
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	return *now < until
}

// failure reports that an attempt on the instance timed out or could not
// reach it.
func (in *grpcInstance) failure() {
	if in.set.detector == nil || !in.set.mayEject(in) {
		return
	}
	in.suspect.Store(true)
	in.set.detector.Failure(in.addr)
}

// success reports an answer from the instance.
func (in *grpcInstance) success() {
	if in.suspect.Load() && in.suspect.Swap(false) {
		in.set.detector.Success(in.addr)
	}
}
