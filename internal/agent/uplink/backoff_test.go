package uplink

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoffDoublesToTheCapWithJitterAndResets(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: 800 * time.Millisecond}
	for round := range 2 {
		for _, base := range []time.Duration{100, 200, 400, 800, 800, 800} {
			base *= time.Millisecond
			d := b.next()
			require.GreaterOrEqual(t, d, base, "round %d", round)
			require.LessOrEqual(t, d, base+base/2, "round %d", round)
		}
		b.reset()
	}
}
