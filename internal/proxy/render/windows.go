package render

import (
	"cmp"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fodc-go/fodc/internal/proxy/series"
)

// wref is the per-series working record of WriteWindows.
type wref struct {
	s    *series.Series
	node *series.Node
	seq  int32 // input order, for a total order
}

// WriteWindows writes batches as the /metrics-windows JSON array, one
// element per series, streamed element by element:
//
//	{"name","description","labels":{...},"agent_id","ip","port","pod_name",
//	 "data":[{"timestamp":"<RFC3339Nano, UTC>","value":<number>}]}
//
// pod_name is the series' pod_name label, else the node's pod name. NaN and
// ±Inf values are written as the strings "NaN", "+Inf" and "-Inf" so that
// the document is always valid JSON. Elements are ordered by name, label
// set and agent id. Series without points are left out (Stats.Dropped).
// No series gives "[]".
func WriteWindows(w io.Writer, batches []series.Batch) (Stats, error) {
	var st Stats
	n := 0
	for i := range batches {
		n += len(batches[i].Series)
	}
	refs := make([]wref, 0, n)
	var seq int32
	for bi := range batches {
		b := &batches[bi]
		for si := range b.Series {
			seq++
			if len(b.Series[si].Points) == 0 {
				st.Dropped++
				continue
			}
			refs = append(refs, wref{s: &b.Series[si], node: &b.Node, seq: seq})
		}
	}
	slices.SortFunc(refs, func(a, b wref) int {
		if c := strings.Compare(a.s.Name, b.s.Name); c != 0 {
			return c
		}
		if c := series.CompareSkip(a.s.Labels, -1, b.s.Labels, -1); c != 0 {
			return c
		}
		if c := strings.Compare(a.node.AgentID, b.node.AgentID); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})

	buf := make([]byte, 0, flushAt+4096)
	buf = append(buf, '[')
	for i := range refs {
		r := &refs[i]
		if i > 0 {
			buf = append(buf, ',')
		}
		if i == 0 || r.s.Name != refs[i-1].s.Name {
			st.Families++
		}
		buf = appendWindowSeries(buf, r.s, r.node)
		st.Series++
		if len(buf) >= flushAt {
			if _, err := w.Write(buf); err != nil {
				return st, err
			}
			buf = buf[:0]
		}
	}
	buf = append(buf, ']')
	_, err := w.Write(buf)
	return st, err
}

// appendWindowSeries appends one array element. The encoding is written
// by hand rather than with encoding/json: see BenchmarkWindowsElement.
func appendWindowSeries(buf []byte, s *series.Series, node *series.Node) []byte {
	buf = append(buf, `{"name":`...)
	buf = appendJSONString(buf, s.Name)
	buf = append(buf, `,"description":`...)
	buf = appendJSONString(buf, s.Help)
	buf = append(buf, `,"labels":{`...)
	for i, l := range s.Labels {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, l.Name)
		buf = append(buf, ':')
		buf = appendJSONString(buf, l.Value)
	}
	buf = append(buf, `},"agent_id":`...)
	buf = appendJSONString(buf, node.AgentID)
	buf = append(buf, `,"ip":`...)
	buf = appendJSONString(buf, node.IP)
	buf = append(buf, `,"port":`...)
	buf = strconv.AppendInt(buf, int64(node.Port), 10)
	buf = append(buf, `,"pod_name":`...)
	pod := s.Labels.Get("pod_name")
	if pod == "" {
		pod = node.PodName
	}
	buf = appendJSONString(buf, pod)
	buf = append(buf, `,"data":[`...)
	for i, p := range s.Points {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"timestamp":"`...)
		buf = time.UnixMilli(p.TimestampMs).UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, `","value":`...)
		buf = appendJSONFloat(buf, p.Value)
		buf = append(buf, '}')
	}
	return append(buf, "]}"...)
}

// appendJSONFloat appends v as a JSON number in the style of encoding/json
// (plain decimal for 1e-6 <= |v| < 1e21, exponent otherwise), or as the
// string "NaN", "+Inf" or "-Inf", which JSON numbers cannot express.
func appendJSONFloat(buf []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(buf, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(buf, `"+Inf"`...)
	case math.IsInf(v, -1):
		return append(buf, `"-Inf"`...)
	}
	format := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	start := len(buf)
	buf = strconv.AppendFloat(buf, v, format, -1, 64)
	if format == 'e' {
		// Shorten a two-digit negative exponent with a leading zero:
		// 1e-07 becomes 1e-7.
		if n := len(buf); n-start >= 4 && buf[n-4] == 'e' && buf[n-3] == '-' && buf[n-2] == '0' {
			buf[n-2] = buf[n-1]
			buf = buf[:n-1]
		}
	}
	return buf
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Control characters are
// escaped, invalid UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped so
// the output is also valid JavaScript.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\u202`...)
			buf = append(buf, hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
