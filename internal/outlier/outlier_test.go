package outlier

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(cfg Config) (*Detector, *clock, *[]time.Duration) {
	var ejections []time.Duration
	d := New(cfg, func(_ string, length time.Duration) { ejections = append(ejections, length) })
	c := &clock{t: time.Unix(1000, 0)}
	d.now = c.now
	return d, c, &ejections
}

func TestDetector(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		// steps: 'f' failure, 's' success, digits advance the clock by that many base times
		steps       string
		wantEjected bool
		wantLengths []time.Duration
	}{
		{"below threshold", Config{}, "ffff", false, nil},
		{"threshold ejects", Config{}, "fffff", true, []time.Duration{30 * time.Second}},
		{"success resets the count", Config{}, "ffffsffff", false, nil},
		{"ejection ends", Config{}, "fffff1", false, []time.Duration{30 * time.Second}},
		{"second ejection is longer", Config{ConsecutiveFailures: 2}, "ff1ff", true, []time.Duration{30 * time.Second, 60 * time.Second}},
		{"multiplier relaxes after a healthy base time", Config{ConsecutiveFailures: 2}, "ff1s1ff", true, []time.Duration{30 * time.Second, 30 * time.Second}},
		{"capped", Config{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute, MaxEjectionTime: 90 * time.Second}, "f1f", true, []time.Duration{time.Minute, 90 * time.Second}},
		{"failures while ejected do not extend it", Config{ConsecutiveFailures: 1}, "fff", true, []time.Duration{30 * time.Second}},
		{"disabled", Config{ConsecutiveFailures: -1}, "ffffffffff", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, c, lengths := newTest(tt.cfg)
			for _, s := range tt.steps {
				switch {
				case s == 'f':
					d.Failure("a:1")
				case s == 's':
					d.Success("a:1")
				default:
					c.t = c.t.Add(time.Duration(s-'0') * d.base)
				}
			}
			if got := d.Ejected("a:1"); got != tt.wantEjected {
				t.Errorf("Ejected = %v, want %v", got, tt.wantEjected)
			}
			if d.Ejected("b:1") {
				t.Error("another instance is ejected")
			}
			if len(*lengths) != len(tt.wantLengths) {
				t.Fatalf("ejections %v, want %v", *lengths, tt.wantLengths)
			}
			for i := range tt.wantLengths {
				if (*lengths)[i] != tt.wantLengths[i] {
					t.Fatalf("ejections %v, want %v", *lengths, tt.wantLengths)
				}
			}
		})
	}
}

func TestNilDetector(t *testing.T) {
	var d *Detector
	d.Success("a")
	if d.Failure("a") || d.Ejected("a") {
		t.Fatal("a nil Detector ejected")
	}
}

// TestDetectorFastPath checks the counts that let Success and Ejected skip
// the lock: they go back to zero once every instance answers again.
func TestDetectorFastPath(t *testing.T) {
	d, c, _ := newTest(Config{ConsecutiveFailures: 2})
	d.Success("a:1")
	if n := d.tracked.Load(); n != 0 {
		t.Fatalf("a success tracked %d instances", n)
	}
	d.Failure("a:1")
	d.Failure("b:1")
	d.Success("b:1")
	if n := d.tracked.Load(); n != 1 {
		t.Fatalf("tracked %d instances, want 1 (b answered)", n)
	}
	d.Failure("a:1")
	if !d.Ejected("a:1") || d.ejected.Load() != 1 {
		t.Fatalf("a not ejected (count %d)", d.ejected.Load())
	}
	c.t = c.t.Add(d.base)
	if d.Ejected("a:1") {
		t.Fatal("a still ejected after its ejection time")
	}
	if n := d.ejected.Load(); n != 0 {
		t.Fatalf("ejected count %d after the ejection ended", n)
	}
	// The multiplier is remembered until a healthy base time has passed.
	d.Success("a:1")
	if n := d.tracked.Load(); n != 1 {
		t.Fatalf("tracked %d instances, want 1 (a's multiplier)", n)
	}
	c.t = c.t.Add(d.base)
	d.Success("a:1")
	if n := d.tracked.Load(); n != 0 {
		t.Fatalf("tracked %d instances after a healthy base time, want 0", n)
	}
}

// BenchmarkDetector measures what a caller pays per attempt: Ejected on
// the chosen instance and Success once it answered, while nothing is
// ejected (the common case, lock-free) and while another instance is.
func BenchmarkDetector(b *testing.B) {
	b.Run("none-ejected", func(b *testing.B) {
		d := New(Config{}, nil)
		b.ReportAllocs()
		for b.Loop() {
			if !d.Ejected("a:1") {
				d.Success("a:1")
			}
		}
	})
	b.Run("other-ejected", func(b *testing.B) {
		d := New(Config{ConsecutiveFailures: 1, BaseEjectionTime: time.Hour}, nil)
		d.Failure("b:1")
		b.ReportAllocs()
		for b.Loop() {
			if !d.Ejected("a:1") {
				d.Success("a:1")
			}
		}
	})
}

func TestCapAllows(t *testing.T) {
	tests := []struct {
		ejected, instances, percent int
		want                        bool
	}{
		{0, 2, 10, true},   // one always may be
		{1, 2, 10, false},  // but only one of fewer than 20 at 10 %
		{1, 20, 10, true},  // two of 20
		{2, 20, 10, false}, // not three
		{1, 2, 100, true},
		{0, 1, 0, true},
		{1, 4, 0, false},
	}
	for _, tt := range tests {
		if got := CapAllows(tt.ejected, tt.instances, tt.percent); got != tt.want {
			t.Errorf("CapAllows(%d, %d, %d) = %v, want %v", tt.ejected, tt.instances, tt.percent, got, tt.want)
		}
	}
}
