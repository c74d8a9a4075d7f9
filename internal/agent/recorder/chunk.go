package recorder

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Chunk encoding.
//
// A chunk holds the samples of one series in time order. It starts with a
// byte-aligned header and continues as a bit stream:
//
//	header:  encoding byte, t0 as a zig-zag varint, then v0: a zig-zag
//	         varint (encInt) or the 8 raw IEEE-754 bytes (encXOR).
//	sample:  timestamp, then value.
//
// Timestamps are Unix milliseconds. Each delta d = t − t_prev is coded as
// its residual against a reference interval: r = d − ref, in a prefix code:
// "0" for zero, "10" plus tsWidths[0] bits, "110" plus tsWidths[1] bits,
// and so on, and all ones plus 64 raw bits as the last resort. The
// reference starts at 0 and is reset to refInterval(d) whenever |r| >
// tsResetResidual, so a change of scrape interval costs one long residual,
// like a delta of deltas. Unlike a plain delta of deltas, scrape jitter j
// (t = nominal + j) leaves residuals of j_i − j_(i−1) instead of
// j_i − 2·j_(i−1) + j_(i−2), which fit the shortest code far more often.
// Arithmetic wraps, so every int64 is representable.
//
// Values are coded one of two ways, chosen by the first sample:
//
//   - encInt, when the value is an integer of magnitude at most 2^53 (and
//     not −0): the difference to the previous value in the same prefix code
//     with intWidths. Counters and integer gauges, most of what BanyanDB
//     exposes, cost one bit when unchanged and a few bits when they move by
//     a little. A value that is not such an integer cannot be appended;
//     the caller seals the chunk and starts a new one.
//   - encXOR: the XOR with the previous value's bits, after Gorilla
//     (Pelkonen et al., VLDB 2015): "0" for an identical value, "10" plus
//     the meaningful bits when they fit the previous window, else "11", 5
//     bits of leading zeros (capped at 31), 6 bits of window length minus
//     one, and the meaningful bits. Any float64 bit pattern round-trips,
//     NaN payloads and −0 included.
const (
	encXOR byte = 1
	encInt byte = 2
)

var (
	tsWidths  = []uint8{4, 8, 14, 24, 40}
	intWidths = []uint8{4, 8, 14, 24, 40}
)

// tsResetResidual is the largest residual that keeps the reference interval.
const tsResetResidual = 32

// refInterval turns an observed delta into the reference interval. Scrape
// intervals of a second or more are round numbers of milliseconds, so a
// delta within refSnap of a multiple of 100 ms snaps to it, and the jitter
// of the one observation does not bias every later residual.
func refInterval(d int64) int64 {
	if d < 1000 || d > math.MaxInt64-50 {
		return d
	}
	r := (d + 50) / 100 * 100
	if r-d > refSnap || d-r > refSnap {
		return d
	}
	return r
}

// refSnap is how far from a round interval a delta may be to snap to it.
const refSnap = 16

// maxExact is the magnitude below which every integer is a float64.
const maxExact = 1 << 53

// exactInt reports v as an int64 when encInt can carry it losslessly.
func exactInt(v float64) (int64, bool) {
	if v != math.Trunc(v) || v > maxExact || v < -maxExact || (v == 0 && math.Signbit(v)) {
		return 0, false
	}
	return int64(v), true
}

// bitWriter appends bits most-significant first.
type bitWriter struct {
	b    []byte
	free uint8 // unused low bits in the last byte of b
}

// writeBits writes the low n (0..64) bits of u.
func (w *bitWriter) writeBits(u uint64, n uint8) {
	if n == 0 {
		return
	}
	u <<= 64 - n
	for n > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		k := min(n, w.free)
		w.b[len(w.b)-1] |= byte(u>>(64-k)) << (w.free - k)
		u <<= k
		n -= k
		w.free -= k
	}
}

// bitReader reads what a bitWriter wrote.
type bitReader struct {
	b   []byte
	pos int // next bit
}

func (r *bitReader) readBits(n uint8) (uint64, bool) {
	if r.pos+int(n) > len(r.b)*8 {
		return 0, false
	}
	var u uint64
	for n > 0 {
		off := uint8(r.pos & 7)
		avail := 8 - off
		k := min(n, avail)
		chunk := (r.b[r.pos>>3] >> (avail - k)) & byte(1<<k-1)
		u = u<<k | uint64(chunk)
		r.pos += int(k)
		n -= k
	}
	return u, true
}

// writeSigned writes x in the prefix code described above.
func writeSigned(w *bitWriter, x int64, widths []uint8) {
	if x == 0 {
		w.writeBits(0, 1)
		return
	}
	for i, n := range widths {
		lim := int64(1) << (n - 1)
		if x >= -lim && x < lim {
			// i+1 ones and a zero, then the low n bits.
			w.writeBits(1<<(i+2)-2, uint8(i+2))
			w.writeBits(uint64(x)&(1<<n-1), n)
			return
		}
	}
	k := uint8(len(widths) + 1)
	w.writeBits(1<<k-1, k)
	w.writeBits(uint64(x), 64)
}

func readSigned(r *bitReader, widths []uint8) (int64, bool) {
	ones := 0
	for ones <= len(widths) {
		b, ok := r.readBits(1)
		if !ok {
			return 0, false
		}
		if b == 0 {
			break
		}
		ones++
	}
	switch {
	case ones == 0:
		return 0, true
	case ones > len(widths):
		u, ok := r.readBits(64)
		return int64(u), ok
	}
	n := widths[ones-1]
	u, ok := r.readBits(n)
	shift := 64 - n
	return int64(u<<shift) >> shift, ok
}

// appender encodes samples into one chunk. It is not safe for concurrent
// use.
type appender struct {
	w         bitWriter
	n         int
	enc       byte
	hasWindow bool
	lead      uint8 // leading zeros of the current XOR window
	trail     uint8 // trailing zeros of the current XOR window
	tPrev     int64
	dRef      int64
	vPrev     uint64 // encXOR: bits of the previous value; encInt: the previous value as int64
}

// newAppender starts a chunk with its first sample. The encoding follows
// the value: encInt when exactInt accepts it, else encXOR.
func newAppender(t int64, v float64, capHint int) *appender {
	a := &appender{n: 1, tPrev: t}
	b := make([]byte, 0, max(capHint, 16))
	if iv, ok := exactInt(v); ok {
		a.enc, a.vPrev = encInt, uint64(iv)
		b = binary.AppendVarint(append(b, encInt), t)
		b = binary.AppendVarint(b, iv)
	} else {
		a.enc, a.vPrev = encXOR, math.Float64bits(v)
		b = binary.AppendVarint(append(b, encXOR), t)
		b = binary.BigEndian.AppendUint64(b, a.vPrev)
	}
	a.w.b = b
	return a
}

// append adds a sample. It returns false, leaving the chunk unchanged, when
// an encInt chunk is offered a value it cannot carry.
func (a *appender) append(t int64, v float64) bool {
	var iv int64
	if a.enc == encInt {
		var ok bool
		if iv, ok = exactInt(v); !ok {
			return false
		}
	}
	d := t - a.tPrev
	res := d - a.dRef
	writeSigned(&a.w, res, tsWidths)
	if res > tsResetResidual || res < -tsResetResidual {
		a.dRef = refInterval(d)
	}
	a.tPrev = t
	if a.enc == encInt {
		writeSigned(&a.w, iv-int64(a.vPrev), intWidths)
		a.vPrev = uint64(iv)
	} else {
		a.writeXOR(math.Float64bits(v))
	}
	a.n++
	return true
}

func (a *appender) writeXOR(vb uint64) {
	x := vb ^ a.vPrev
	a.vPrev = vb
	if x == 0 {
		a.w.writeBits(0, 1)
		return
	}
	lead := min(uint8(bits.LeadingZeros64(x)), 31)
	trail := uint8(bits.TrailingZeros64(x))
	if a.hasWindow && lead >= a.lead && trail >= a.trail {
		a.w.writeBits(0b10, 2)
		a.w.writeBits(x>>a.trail, 64-a.lead-a.trail)
		return
	}
	a.hasWindow, a.lead, a.trail = true, lead, trail
	sig := 64 - lead - trail
	a.w.writeBits(0b11, 2)
	a.w.writeBits(uint64(lead), 5)
	a.w.writeBits(uint64(sig-1), 6)
	a.w.writeBits(x>>trail, sig)
}

// iterator decodes a chunk of n samples. It never panics on malformed
// input; it stops and reports false from next instead.
type iterator struct {
	r         bitReader
	n, i      int
	enc       byte
	hasWindow bool
	lead      uint8
	trail     uint8
	t, dRef   int64
	vb        uint64 // encXOR: value bits; encInt: the value as int64
}

func newIterator(data []byte, n int) iterator {
	return iterator{r: bitReader{b: data}, n: n}
}

// next advances to the next sample and reports whether there is one.
func (it *iterator) next() bool {
	if it.i >= it.n {
		return false
	}
	if it.i == 0 {
		if !it.readHeader() {
			it.n = 0
			return false
		}
		it.i++
		return true
	}
	res, ok := readSigned(&it.r, tsWidths)
	if !ok {
		it.n = 0
		return false
	}
	d := it.dRef + res
	if res > tsResetResidual || res < -tsResetResidual {
		it.dRef = refInterval(d)
	}
	it.t += d
	if it.enc == encInt {
		delta, ok := readSigned(&it.r, intWidths)
		if !ok {
			it.n = 0
			return false
		}
		it.vb = uint64(int64(it.vb) + delta)
	} else if !it.readXOR() {
		it.n = 0
		return false
	}
	it.i++
	return true
}

func (it *iterator) readHeader() bool {
	b := it.r.b
	if len(b) < 1 {
		return false
	}
	it.enc = b[0]
	t, k := binary.Varint(b[1:])
	if k <= 0 {
		return false
	}
	it.t = t
	off := 1 + k
	switch it.enc {
	case encInt:
		v, k := binary.Varint(b[off:])
		if k <= 0 {
			return false
		}
		it.vb = uint64(v)
		off += k
	case encXOR:
		if len(b) < off+8 {
			return false
		}
		it.vb = binary.BigEndian.Uint64(b[off:])
		off += 8
	default:
		return false
	}
	it.r.pos = off * 8
	return true
}

func (it *iterator) readXOR() bool {
	ctl, ok := it.r.readBits(1)
	if !ok {
		return false
	}
	if ctl == 0 {
		return true
	}
	if ctl, ok = it.r.readBits(1); !ok {
		return false
	}
	if ctl == 1 {
		lead, ok1 := it.r.readBits(5)
		sig, ok2 := it.r.readBits(6)
		if !ok1 || !ok2 {
			return false
		}
		if lead+sig+1 > 64 {
			return false
		}
		it.hasWindow = true
		it.lead = uint8(lead)
		it.trail = 64 - it.lead - uint8(sig+1)
	} else if !it.hasWindow {
		return false
	}
	sig := 64 - it.lead - it.trail
	x, ok := it.r.readBits(sig)
	if !ok {
		return false
	}
	it.vb ^= x << it.trail
	return true
}

// at returns the current sample.
func (it *iterator) at() (int64, float64) {
	if it.enc == encInt {
		return it.t, float64(int64(it.vb))
	}
	return it.t, math.Float64frombits(it.vb)
}
