package httpapi

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/common/expfmt"
)

// Answer formats of /metrics, negotiated from Accept the way client_golang
// does (expfmt): OpenMetrics 1.0 when the client prefers it, else text.
const (
	formatText        = "text"
	formatOpenMetrics = "openmetrics"
)

// negotiateFormat picks the /metrics format for r.
func negotiateFormat(r *http.Request) string {
	f := expfmt.NegotiateAccept(r.Header, expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics))
	if f.FormatType() == expfmt.TypeOpenMetrics {
		return formatOpenMetrics
	}
	return formatText
}

// Content codings the proxy compresses with. gzip is what every Prometheus
// asks for; zstd is cheaper still for clients that offer it.
const (
	encodingIdentity = "identity"
	encodingGzip     = "gzip"
	encodingZstd     = "zstd"
)

// negotiateEncoding picks the best coding that r accepts with a non-zero
// quality: zstd, then gzip, then none. Parameters other than q are ignored.
func negotiateEncoding(r *http.Request) string {
	best, bestQ := encodingIdentity, 0.0
	rank := map[string]int{encodingZstd: 2, encodingGzip: 1}
	for _, h := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(h, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if _, ok := rank[name]; !ok {
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						q = f
					}
				}
			}
			if q <= 0 {
				continue
			}
			if q > bestQ || (q == bestQ && rank[name] > rank[best]) {
				best, bestQ = name, q
			}
		}
	}
	return best
}

// encodedBodies compresses one shared answer at most once per coding, for
// every caller that wants it.
type encodedBodies struct {
	plain []byte

	mu     sync.Mutex // guards bodies
	bodies map[string][]byte
}

// zstdEncoder is shared: EncodeAll is safe for concurrent use, and an
// encoder holds sizeable tables.
var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only invalid options fail
	}
	return e
})

// body returns the answer in coding enc (identity, gzip or zstd).
func (e *encodedBodies) body(enc string) []byte {
	if enc == encodingIdentity {
		return e.plain
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.bodies[enc]; ok {
		return b
	}
	var out []byte
	switch enc {
	case encodingGzip:
		var buf bytes.Buffer
		buf.Grow(len(e.plain) / 8)
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write(e.plain) // a bytes.Buffer does not fail
		_ = zw.Close()
		out = buf.Bytes()
	case encodingZstd:
		out = zstdEncoder().EncodeAll(e.plain, make([]byte, 0, len(e.plain)/8))
	}
	if e.bodies == nil {
		e.bodies = make(map[string][]byte, 2)
	}
	e.bodies[enc] = out
	return out
}

// compressingWriter compresses a streamed answer with one coding.
type compressingWriter struct {
	io.Writer
	close func() error
}

// compressTo sets the Content-Encoding header of w for enc and returns a
// writer that compresses into w; its close must be called once the
// answer is written.
func compressTo(w http.ResponseWriter, enc string) compressingWriter {
	w.Header().Add("Vary", "Accept-Encoding")
	switch enc {
	case encodingGzip:
		w.Header().Set("Content-Encoding", encodingGzip)
		zw, _ := gzipWriters.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		} else {
			zw.Reset(w)
		}
		return compressingWriter{zw, func() error {
			err := zw.Close()
			gzipWriters.Put(zw)
			return err
		}}
	case encodingZstd:
		zw, _ := zstdWriters.Get().(*zstd.Encoder)
		if zw == nil {
			var err error
			if zw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1)); err != nil {
				break
			}
		} else {
			zw.Reset(w)
		}
		w.Header().Set("Content-Encoding", encodingZstd)
		return compressingWriter{zw, func() error {
			err := zw.Close()
			zstdWriters.Put(zw)
			return err
		}}
	}
	return compressingWriter{w, func() error { return nil }}
}

// Compressors of streamed answers are reused: each holds its tables
// (hundreds of KiB for gzip, more for zstd), which a scrape would
// otherwise allocate every time. A writer is closed, which ends its
// stream, before it goes back.
var gzipWriters, zstdWriters sync.Pool
