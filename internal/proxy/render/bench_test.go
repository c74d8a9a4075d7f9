package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/klauspost/compress/gzip"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// benchReply builds a realistic reply of about n series from a recorded
// one: the recorded series repeated with a distinct "group" label per copy
// and shuffled like an agent's map order. It returns the marshalled bytes.
// Agent number agent gets its own pod name and address, as distinct agents
// have.
func benchReply(tb testing.TB, sessionName string, reply, n, agent int) ([]byte, decode.NodeInfo) {
	tb.Helper()
	s := loadSession(tb, sessionName, 17913)
	pod := fmt.Sprintf("banyand-data-%d", agent)
	s.info.Node.PodName = pod
	s.info.Node.IP = fmt.Sprintf("10.0.0.%d", agent+1)
	base := s.replies[reply].Metrics
	copies := (n + len(base) - 1) / len(base)
	ms := make([]*fodcv1.Metric, 0, copies*len(base))
	for c := range copies {
		for _, m := range base {
			labels := make(map[string]string, len(m.Labels)+1)
			for k, v := range m.Labels {
				labels[k] = v
			}
			labels["group"] = fmt.Sprintf("group-%03d", c)
			if _, ok := labels["pod_name"]; ok {
				labels["pod_name"] = pod
			}
			ms = append(ms, &fodcv1.Metric{
				Name: m.Name, Labels: labels, Value: m.Value + float64(c),
				Description: m.Description, Type: m.Type, Timestamp: m.Timestamp,
			})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: ms, Timestamp: s.replies[reply].Timestamp})
	require.NoError(tb, err)
	return raw, s.info
}

// BenchmarkPipeline is the /metrics hot path for one or more agents,
// sequentially: decode each reply from its wire bytes straight into
// enriched, packed series (decode.DecodeLatest, as the scraper does),
// render everything as text. Compare with BenchmarkFloor, which runs the
// same cases; ns/series is the cost of one series.
func BenchmarkPipeline(b *testing.B) {
	for _, bc := range pipelineCases {
		b.Run(bc.name, func(b *testing.B) {
			raws, infos, size := agentReplies(b, bc.session, bc.agents, bc.series)
			now := time.Now()
			packs := make([]*series.Packed, bc.agents)
			var out bytes.Buffer
			b.ReportAllocs()
			b.SetBytes(size)
			cpu0 := cpuTime()
			for b.Loop() {
				for a := range packs {
					var err error
					if packs[a], _, err = (decode.Limits{}).DecodeLatest(infos[a], raws[a], now, decode.TimeRange{}); err != nil {
						b.Fatal(err)
					}
				}
				out.Reset()
				if _, err := WritePackedText(&out, packs, false); err != nil {
					b.Fatal(err)
				}
				for _, p := range packs { // as the proxy does once the answer is written
					p.Recycle()
				}
			}
			reportPerSeries(b, bc.agents*bc.series, out.Len(), cpu0)
		})
	}
}

// reportPerSeries adds the time per series, the process' CPU time per
// series (user and system, GC included: less sensitive than the time to
// other work on a shared machine) and the answer's size to a benchmark's
// results. cpu0 is cpuTime() when the loop started.
func reportPerSeries(b *testing.B, n, answer int, cpu0 time.Duration) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/series")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/series")
	b.ReportMetric(float64(answer), "answer-bytes")
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// agentReplies builds one reply of n series per agent.
func agentReplies(b *testing.B, session string, agents, n int) ([][]byte, []decode.NodeInfo, int64) {
	raws := make([][]byte, agents)
	infos := make([]decode.NodeInfo, agents)
	var size int64
	for a := range agents {
		raws[a], infos[a] = benchReply(b, session, 0, n, a)
		size += int64(len(raws[a]))
	}
	return raws, infos, size
}

var pipelineCases = []struct {
	name    string
	session string
	agents  int
	series  int
}{
	{"typed/1x10k", "v0.10.3-agent-data-node", 1, 10000},
	{"untyped/1x10k", "head-agent-data-node", 1, 10000},
	{"typed/10x10k", "v0.10.3-agent-data-node", 10, 10000},
	{"typed/100x1k", "v0.10.3-agent-data-node", 100, 1000},
	{"typed/1000x100", "v0.10.3-agent-data-node", 1000, 100},
}

// BenchmarkFloor is the least any proxy must do with the same bytes:
// walk each reply's wire encoding once (protowire, checking that strings
// are UTF-8 as proto3 requires) and append every metric as a text line,
// name{labels} value, with its labels in wire order and values escaped,
// into a reused buffer. No enrichment, no family grouping, no ordering, no
// duplicate removal: its output is not even valid exposition, which is
// what makes it a floor.
func BenchmarkFloor(b *testing.B) {
	for _, bc := range pipelineCases {
		b.Run(bc.name, func(b *testing.B) {
			raws, _, size := agentReplies(b, bc.session, bc.agents, bc.series)
			var out bytes.Buffer
			buf := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			b.SetBytes(size)
			cpu0 := cpuTime()
			for b.Loop() {
				out.Reset()
				for _, raw := range raws {
					var err error
					if buf, err = floorAppend(buf[:0], raw); err != nil {
						b.Fatal(err)
					}
					out.Write(buf)
				}
			}
			reportPerSeries(b, bc.agents*bc.series, out.Len(), cpu0)
		})
	}
}

var errFloor = errors.New("malformed reply")

// floorAppend appends the text lines of one StreamMetricsRequest.
func floorAppend(buf, raw []byte) ([]byte, error) {
	str := func(b []byte) ([]byte, int) {
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !utf8.Valid(v) {
			return nil, -1
		}
		return v, n
	}
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return buf, errFloor
		}
		raw = raw[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, raw); n < 0 {
				return buf, errFloor
			}
			raw = raw[n:]
			continue
		}
		m, n := protowire.ConsumeBytes(raw)
		if n < 0 {
			return buf, errFloor
		}
		raw = raw[n:]
		var name []byte
		var value float64
		labels := len(buf) // labels are appended first, the name moved in front after
		buf = append(buf, '{')
		for len(m) > 0 {
			num, typ, n := protowire.ConsumeTag(m)
			if n < 0 {
				return buf, errFloor
			}
			m = m[n:]
			switch {
			case num == 1 && typ == protowire.BytesType:
				name, n = str(m)
			case num == 2 && typ == protowire.BytesType:
				var e []byte
				if e, n = protowire.ConsumeBytes(m); n < 0 {
					return buf, errFloor
				}
				var k, v []byte
				for len(e) > 0 {
					enum, etyp, en := protowire.ConsumeTag(e)
					if en < 0 || etyp != protowire.BytesType {
						return buf, errFloor
					}
					e = e[en:]
					var s []byte
					if s, en = str(e); en < 0 {
						return buf, errFloor
					}
					if enum == 1 {
						k = s
					} else {
						v = s
					}
					e = e[en:]
				}
				if len(buf) > labels+1 {
					buf = append(buf, ',')
				}
				buf = append(buf, k...)
				buf = append(buf, '=', '"')
				buf = appendEscaped(buf, unsafe.String(unsafe.SliceData(v), len(v)), true)
				buf = append(buf, '"')
			case num == 3 && typ == protowire.Fixed64Type:
				var v uint64
				v, n = protowire.ConsumeFixed64(m)
				value = math.Float64frombits(v)
			default:
				n = protowire.ConsumeFieldValue(num, typ, m)
			}
			if n < 0 {
				return buf, errFloor
			}
			m = m[n:]
		}
		buf = append(buf, '}', ' ')
		buf = appendTextFloat(buf, value)
		buf = append(buf, '\n')
		// Put the name in front of its labels: one move of a short line.
		buf = append(buf, name...)
		line := buf[labels : len(buf)-len(name)]
		copy(buf[labels+len(name):], line)
		copy(buf[labels:], name)
	}
	return buf, nil
}

func windowBatch(b *testing.B) series.Batch {
	raw, info := benchReply(b, "v0.10.3-agent-data-node", 2, 10000, 0)
	var req fodcv1.StreamMetricsRequest
	require.NoError(b, proto.Unmarshal(raw, &req))
	return decodeMessage(b, info, &req, time.Now(), true)
}

// BenchmarkWriteWindows renders an enriched window reply (10k samples,
// about 1.5k series) as /metrics-windows JSON.
func BenchmarkWriteWindows(b *testing.B) {
	batches := []series.Batch{windowBatch(b)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := WriteWindows(io.Discard, batches); err != nil {
			b.Fatal(err)
		}
	}
}

// jsonElement is the encoding/json equivalent of appendWindowSeries, kept
// here only to justify the hand-written encoder.
type jsonElement struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	AgentID     string            `json:"agent_id"`
	IP          string            `json:"ip"`
	Port        int               `json:"port"`
	PodName     string            `json:"pod_name"`
	Data        []jsonPoint       `json:"data"`
}

type jsonPoint struct {
	Timestamp string  `json:"timestamp"`
	Value     float64 `json:"value"` // NaN/Inf would need a custom marshaller on top
}

// BenchmarkWindowsElement compares the hand-written element encoder with
// encoding/json on typed structs (labels need a map there).
func BenchmarkWindowsElement(b *testing.B) {
	batch := windowBatch(b)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64<<10)
		for b.Loop() {
			for i := range batch.Series {
				buf = appendWindowSeries(buf[:0], &batch.Series[i], &batch.Node)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			for i := range batch.Series {
				s := &batch.Series[i]
				e := jsonElement{
					Name: s.Name, Description: s.Help, Labels: make(map[string]string, len(s.Labels)),
					AgentID: batch.Node.AgentID, IP: batch.Node.IP, Port: batch.Node.Port, PodName: batch.Node.PodName,
					Data: make([]jsonPoint, len(s.Points)),
				}
				for _, l := range s.Labels {
					e.Labels[l.Name] = l.Value
				}
				for j, p := range s.Points {
					e.Data[j] = jsonPoint{Timestamp: time.UnixMilli(p.TimestampMs).UTC().Format(time.RFC3339Nano), Value: p.Value}
				}
				buf.Reset()
				if err := enc.Encode(e); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkWriteText renders already enriched replies: the render share of
// BenchmarkPipeline.
func BenchmarkWriteText(b *testing.B) {
	for _, bc := range pipelineCases {
		b.Run(bc.name, func(b *testing.B) {
			raws, infos, _ := agentReplies(b, bc.session, bc.agents, bc.series)
			batches := make([]series.Batch, bc.agents)
			for a := range batches {
				var err error
				batches[a], err = decode.Batch(infos[a], raws[a], time.Now(), false)
				require.NoError(b, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := WriteText(io.Discard, batches); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAnswerCoding is a whole /metrics scrape of 100 agents x 1k
// series after the replies arrived, as the proxy answers one scraper:
// decode every reply, render the text straight into the coding the client
// asked for (plain, gzip at klauspost's BestSpeed, or zstd at
// SpeedFastest) and onto the wire (counted, not kept). ns/op is the
// scrape's CPU work; wire-ratio is the bytes on the wire over the plain
// answer.
func BenchmarkAnswerCoding(b *testing.B) {
	raws, infos, _ := agentReplies(b, "v0.10.3-agent-data-node", 100, 1000)
	codings := []struct {
		name string
		wrap func(io.Writer) (io.Writer, func() error)
	}{
		{"identity", func(w io.Writer) (io.Writer, func() error) { return w, func() error { return nil } }},
		{"gzip", func(w io.Writer) (io.Writer, func() error) {
			zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
			return zw, zw.Close
		}},
		{"zstd", func(w io.Writer) (io.Writer, func() error) {
			zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
			require.NoError(b, err)
			return zw, zw.Close
		}},
	}
	now := time.Now()
	packs := make([]*series.Packed, len(raws))
	var plain int
	for _, c := range codings {
		b.Run(c.name, func(b *testing.B) {
			var wire countingWriter
			b.ReportAllocs()
			for b.Loop() {
				for a := range packs {
					var err error
					if packs[a], _, err = (decode.Limits{}).DecodeLatest(infos[a], raws[a], now, decode.TimeRange{}); err != nil {
						b.Fatal(err)
					}
				}
				wire = 0
				w, closeCoding := c.wrap(&wire)
				if _, err := WritePackedText(w, packs, false); err != nil {
					b.Fatal(err)
				}
				require.NoError(b, closeCoding())
				for _, p := range packs {
					p.Recycle()
				}
			}
			if c.name == "identity" {
				plain = int(wire)
			}
			b.ReportMetric(float64(wire)/float64(plain), "wire-ratio")
			b.ReportMetric(float64(wire), "wire-bytes")
		})
	}
}

// countingWriter counts what it is given and keeps nothing.
type countingWriter int

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
