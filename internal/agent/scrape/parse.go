package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Label is one label pair of a sample.
type Label struct {
	Name, Value string
}

// Sample is one value of one series as read from an exposition.
type Sample struct {
	// Name is the series name, e.g. foo_bucket for a histogram bucket.
	Name string
	// Labels are sorted by Name and include le or quantile where the
	// exposition had them.
	Labels []Label
	// Value is the sample value.
	Value float64
	// TimestampMs is the exposition's timestamp in Unix milliseconds when the
	// line carried one, else the scrape time.
	TimestampMs int64
}

// Family is one metric family: its HELP and TYPE and every sample that
// belongs to it. Histogram and summary component series (_bucket, _sum,
// _count, quantiles) stay in their family under their own series names.
type Family struct {
	Name    string
	Help    string
	Type    fodcv1.MetricType
	Samples []Sample
}

// Parse decodes one exposition body whose media type is contentType.
// OpenMetrics 0.0.1 and 1.0.0 are decoded as such; every other content type
// (including an empty one) is decoded as the Prometheus text format.
// Samples without a timestamp get defaultTsMs. A body with more than
// maxSamples samples fails with an error wrapping ErrTooManySamples; a
// maxSamples of zero or less means no limit. Families come back sorted by
// name; samples keep exposition order.
func Parse(body []byte, contentType string, defaultTsMs int64, maxSamples int) ([]Family, error) {
	format := decodeFormat(contentType)
	dec := expfmt.NewDecoder(bytes.NewReader(body), format)
	var (
		fams  []Family
		total int
	)
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s exposition: %w", formatName(format), err)
		}
		f := convertFamily(&mf, defaultTsMs)
		total += len(f.Samples)
		if maxSamples > 0 && total > maxSamples {
			return nil, fmt.Errorf("%w: more than %d samples in one scrape (raise %s)", ErrTooManySamples, maxSamples, FlagMaxSamples)
		}
		if len(f.Samples) > 0 {
			fams = append(fams, f)
		}
	}
	slices.SortStableFunc(fams, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	return fams, nil
}

// decodeFormat picks the expfmt decoder format from a response Content-Type.
func decodeFormat(contentType string) expfmt.Format {
	h := http.Header{}
	h.Set("Content-Type", contentType)
	f := expfmt.ResponseFormat(h)
	if f.FormatType() == expfmt.TypeOpenMetrics {
		return f
	}
	// Prometheus itself falls back to the text format for unknown or
	// missing content types; so do we. Carry an escaping=allow-utf-8 term
	// over so that UTF-8 names are accepted when the target says so.
	if _, params, err := mime.ParseMediaType(contentType); err == nil && params[model.EscapingKey] == model.AllowUTF8 {
		return expfmt.FmtText.WithEscapingScheme(model.NoEscaping)
	}
	return expfmt.FmtText
}

func formatName(f expfmt.Format) string {
	if f.FormatType() == expfmt.TypeOpenMetrics {
		return "openmetrics"
	}
	return "text"
}

// convertFamily flattens one decoded family into samples.
func convertFamily(mf *dto.MetricFamily, defaultTsMs int64) Family {
	f := Family{Name: mf.GetName(), Help: mf.GetHelp(), Type: convertType(mf.GetType())}
	name := f.Name
	for _, m := range mf.GetMetric() {
		if m == nil {
			continue
		}
		ts := defaultTsMs
		if m.TimestampMs != nil {
			ts = m.GetTimestampMs()
		}
		base := baseLabels(m.GetLabel())
		add := func(series string, ls []Label, v float64) {
			f.Samples = append(f.Samples, Sample{Name: series, Labels: ls, Value: v, TimestampMs: ts})
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			add(name, base, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			add(name, base, m.GetGauge().GetValue())
		case dto.MetricType_SUMMARY:
			s := m.GetSummary()
			if s == nil {
				s = &dto.Summary{} // a parser may leave a family member empty
			}
			for _, q := range s.GetQuantile() {
				add(name, withLabel(base, model.QuantileLabel, formatFloat(q.GetQuantile())), q.GetValue())
			}
			if s.SampleSum != nil {
				add(name+"_sum", base, s.GetSampleSum())
			}
			if s.SampleCount != nil {
				add(name+"_count", base, float64(s.GetSampleCount()))
			}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			sumName, countName := name+"_sum", name+"_count"
			if mf.GetType() == dto.MetricType_GAUGE_HISTOGRAM {
				sumName, countName = name+"_gsum", name+"_gcount"
			}
			h := m.GetHistogram()
			if h == nil {
				h = &dto.Histogram{}
			}
			for _, b := range h.GetBucket() {
				if b == nil {
					continue
				}
				v := float64(b.GetCumulativeCount())
				if b.CumulativeCountFloat != nil {
					v = b.GetCumulativeCountFloat()
				}
				add(name+"_bucket", withLabel(base, model.BucketLabel, formatFloat(b.GetUpperBound())), v)
			}
			if h.SampleSum != nil {
				add(sumName, base, h.GetSampleSum())
			}
			switch {
			case h.SampleCountFloat != nil:
				add(countName, base, h.GetSampleCountFloat())
			case h.SampleCount != nil:
				add(countName, base, float64(h.GetSampleCount()))
			}
		default:
			add(name, base, m.GetUntyped().GetValue())
		}
	}
	return f
}

func convertType(t dto.MetricType) fodcv1.MetricType {
	switch t {
	case dto.MetricType_COUNTER:
		return fodcv1.MetricType_METRIC_TYPE_COUNTER
	case dto.MetricType_GAUGE:
		return fodcv1.MetricType_METRIC_TYPE_GAUGE
	case dto.MetricType_SUMMARY:
		return fodcv1.MetricType_METRIC_TYPE_SUMMARY
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		// The wire enum has no gauge histogram; its components keep the
		// OpenMetrics _gsum/_gcount names so they stay distinguishable.
		return fodcv1.MetricType_METRIC_TYPE_HISTOGRAM
	default:
		return fodcv1.MetricType_METRIC_TYPE_UNTYPED
	}
}

// baseLabels copies the label pairs into a sorted slice.
func baseLabels(lps []*dto.LabelPair) []Label {
	if len(lps) == 0 {
		return nil
	}
	ls := make([]Label, 0, len(lps))
	for _, lp := range lps {
		ls = append(ls, Label{Name: lp.GetName(), Value: lp.GetValue()})
	}
	slices.SortFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	return ls
}

// withLabel returns a new sorted slice with name=value added.
func withLabel(ls []Label, name, value string) []Label {
	out := make([]Label, 0, len(ls)+1)
	i := 0
	for ; i < len(ls) && ls[i].Name < name; i++ {
		out = append(out, ls[i])
	}
	out = append(out, Label{Name: name, Value: value})
	return append(out, ls[i:]...)
}

// formatFloat renders le and quantile label values the way Prometheus
// clients write them.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	default:
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
}
