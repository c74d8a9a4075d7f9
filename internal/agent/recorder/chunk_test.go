package recorder

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

type pt struct {
	t int64
	v float64
}

// roundTrip encodes pts into as many chunks as the encodings demand and
// decodes them again.
func roundTrip(t *testing.T, pts []pt) []pt {
	t.Helper()
	var (
		out []pt
		a   *appender
	)
	flush := func() {
		if a == nil {
			return
		}
		it := newIterator(a.w.b, a.n)
		for it.next() {
			ts, v := it.at()
			out = append(out, pt{ts, v})
		}
		require.Equal(t, a.n, it.i, "decoded every sample")
	}
	for _, p := range pts {
		if a != nil && a.append(p.t, p.v) {
			continue
		}
		flush()
		a = newAppender(p.t, p.v, 0)
	}
	flush()
	return out
}

func requireSameBits(t *testing.T, want, got []pt) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].t, got[i].t, "timestamp %d", i)
		require.Equal(t, math.Float64bits(want[i].v), math.Float64bits(got[i].v), "value %d: want %v got %v", i, want[i].v, got[i].v)
	}
}

func TestChunkRoundTrip(t *testing.T) {
	negZero := math.Copysign(0, -1)
	nanPayload := math.Float64frombits(0x7ff8_dead_beef_0001)
	tests := []struct {
		name string
		pts  []pt
	}{
		{"single", []pt{{1_795_723_720_000, 1}}},
		{"regular counter", seq(200, 10_000, func(i int) float64 { return float64(i * 3) })},
		{"jittered", []pt{{10_003, 1}, {19_998, 2}, {30_001, 2}, {40_000, 2}, {49_994, 9}, {60_009, 9}}},
		{"irregular intervals", []pt{{0, 1}, {1, 2}, {1_000, 3}, {1_001, 4}, {90_000, 5}, {90_010, 6}, {5_000_000_000, 7}, {5_000_000_001, 8}}},
		{"interval change", append(seq(50, 10_000, func(int) float64 { return 5 }), seqFrom(500_000, 50, 15_000, func(int) float64 { return 5 })...)},
		{"special floats", []pt{{1, math.NaN()}, {2, math.Inf(1)}, {3, math.Inf(-1)}, {4, negZero}, {5, 0}, {6, nanPayload}, {7, math.MaxFloat64}, {8, math.SmallestNonzeroFloat64}, {9, -math.MaxFloat64}}},
		{"negative zero first", []pt{{1, negZero}, {2, 0}, {3, negZero}}},
		{"large counters", []pt{{1, 1 << 53}, {2, 1<<53 - 1}, {3, -(1 << 53)}, {4, 1 << 60}, {5, 1<<60 + 256}, {6, 1e300}, {7, 12_183_074_510}}},
		{"int then float", []pt{{1, 1}, {2, 2}, {3, 2.5}, {4, 3}, {5, 4}}},
		{"float wander", seq(300, 10_000, func(i int) float64 { return math.Sin(float64(i)) * 1e-3 })},
		{"extreme timestamps", []pt{{math.MinInt64, 1}, {-1, 2}, {0, 3}, {math.MaxInt64 - 1, 4}, {math.MaxInt64, 5}}},
		{"non-increasing timestamps", []pt{{100, 1}, {50, 2}, {50, 3}, {-70, 4}, {200, 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireSameBits(t, tc.pts, roundTrip(t, tc.pts))
		})
	}
}

func seq(n int, step int64, v func(int) float64) []pt { return seqFrom(1_795_723_720_000, n, step, v) }

func seqFrom(start int64, n int, step int64, v func(int) float64) []pt {
	out := make([]pt, n)
	for i := range out {
		out[i] = pt{start + int64(i)*step, v(i)}
	}
	return out
}

func TestIteratorMalformed(t *testing.T) {
	good := newAppender(1000, 1.5, 0)
	for i := range 10 {
		good.append(int64(2000+i*1000), float64(i)+0.5)
	}
	tests := []struct {
		name string
		data []byte
		n    int
	}{
		{"empty", nil, 3},
		{"unknown encoding", []byte{9, 2, 2}, 2},
		{"truncated header", []byte{encXOR, 0x80}, 1},
		{"truncated xor value", []byte{encXOR, 2, 1, 2, 3}, 1},
		{"truncated body", good.w.b[:len(good.w.b)-3], good.n},
		{"count larger than data", good.w.b, good.n + 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			it := newIterator(tc.data, tc.n)
			got := 0
			for it.next() {
				got++
			}
			require.Less(t, got, tc.n)
			require.False(t, it.next(), "stays done")
		})
	}
}

// FuzzChunk checks that any sample sequence round-trips bit-exactly and
// that decoding arbitrary bytes never panics.
func FuzzChunk(f *testing.F) {
	enc := func(pts ...pt) []byte {
		var b []byte
		for _, p := range pts {
			b = binary.LittleEndian.AppendUint64(b, uint64(p.t))
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.v))
		}
		return b
	}
	f.Add(enc(pt{1000, 1}, pt{2000, 2}, pt{3001, 2.5}, pt{4000, math.NaN()}))
	f.Add(enc(pt{math.MaxInt64, math.Inf(1)}, pt{math.MinInt64, math.Copysign(0, -1)}, pt{0, 1 << 53}))
	f.Add(enc(pt{10_003, 7}, pt{19_998, 7}, pt{30_001, 8}, pt{40_000, 1e9}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var pts []pt
		for i := 0; i+16 <= len(data); i += 16 {
			pts = append(pts, pt{int64(binary.LittleEndian.Uint64(data[i:])), math.Float64frombits(binary.LittleEndian.Uint64(data[i+8:]))})
		}
		requireSameBits(t, pts, roundTrip(t, pts))

		it := newIterator(data, len(data))
		for it.next() {
			_, _ = it.at()
		}
	})
}
