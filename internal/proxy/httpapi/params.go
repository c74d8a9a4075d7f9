package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/roles"
)

// parseFilter reads the agent selection parameters of DESIGN.md §1.4.
func parseFilter(q url.Values) (registry.Filter, error) {
	var f registry.Filter
	if v := q.Get("role"); v != "" {
		r, err := roles.Parse(v)
		if err != nil {
			return f, badParam("role", "%v", err)
		}
		f.Role, f.HasRole = r, true
	}
	if v := q.Get("address"); v != "" {
		if err := validateAddress(v); err != nil {
			return f, badParam("address", "%q: %v (want ip or ip:port)", v, err)
		}
		f.Address = v
	}
	f.PodName = q.Get("pod_name")
	f.AgentID = q.Get("agent_id")
	return f, nil
}

func validateAddress(v string) error {
	host := v
	if strings.Count(v, ":") == 1 || strings.HasPrefix(v, "[") {
		h, port, err := net.SplitHostPort(v)
		if err != nil {
			return err
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port %q out of range 1-65535", port)
		}
		host = h
	}
	if host == "" {
		return fmt.Errorf("empty host")
	}
	return nil
}

// isFiltered reports whether the request narrows the agent selection.
func isFiltered(f registry.Filter) bool {
	return f.HasRole || f.Address != "" || f.PodName != "" || f.AgentID != ""
}

// parseWindow reads start_time and end_time (RFC3339, fractions allowed).
func parseWindow(q url.Values) (series.Window, error) {
	var w series.Window
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start_time", &w.Start}, {"end_time", &w.End}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return w, badParam(p.name, "%q is not an RFC3339 time such as 2026-01-02T15:04:05Z", v)
		}
		*p.dst = t
	}
	if !w.Start.IsZero() && !w.End.IsZero() && w.Start.After(w.End) {
		return w, &badRequest{msg: fmt.Sprintf("invalid start_time: %s is after end_time %s",
			w.Start.Format(time.RFC3339Nano), w.End.Format(time.RFC3339Nano))}
	}
	return w, nil
}

// scrapeTimeoutHeader is how Prometheus tells a target its scrape budget.
const scrapeTimeoutHeader = "X-Prometheus-Scrape-Timeout-Seconds"

// maxBudget caps any caller-supplied budget.
const maxBudget = 5 * time.Minute

// budget is how long a collection may wait for agents: the caller's scrape
// timeout minus a margin for rendering and the network when the header is
// present, the configured default otherwise.
func budget(r *http.Request, def time.Duration) time.Duration {
	v := r.Header.Get(scrapeTimeoutHeader)
	if v == "" {
		return def
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil || secs <= 0 {
		return def
	}
	d := time.Duration(secs * float64(time.Second))
	// Keep a tenth of the budget, at least 100ms and at most 1s, for
	// encoding and sending the answer.
	margin := min(max(d/10, 100*time.Millisecond), time.Second)
	if d-margin < d/2 {
		d /= 2
	} else {
		d -= margin
	}
	return min(d, maxBudget)
}
