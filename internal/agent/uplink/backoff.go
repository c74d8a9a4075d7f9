package uplink

import (
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential backoff with jitter. It is not safe for
// concurrent use.
type backoff struct {
	initial, max time.Duration
	cur          time.Duration // base of the next wait; 0 means initial
}

// next returns the wait before the next attempt, base + rand[0, base/2],
// and doubles the base up to max.
func (b *backoff) next() time.Duration {
	d := b.cur
	if d <= 0 {
		d = b.initial
	}
	b.cur = min(2*d, b.max)
	return d + rand.N(d/2+1)
}

// reset starts the next wait from the initial interval again.
func (b *backoff) reset() { b.cur = 0 }
