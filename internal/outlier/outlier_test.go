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
