package httpapi

// Query parameters. Every endpoint reads its parameters through these
// functions, which apply one set of rules (README, "HTTP API"):
//   - a malformed query string is a 400 naming "query";
//   - a parameter an endpoint takes may be given at most once, and a value
//     it cannot use is a 400 naming the parameter;
//   - an empty value is the same as no value (dashboards send role= for
//     "any");
//   - parameters an endpoint does not take are ignored, so that dashboards
//     and scrapers that add their own (cache busters, Prometheus params)
//     keep working.

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/roles"
)

// Limits of parameter values.
const (
	// maxNameLen bounds pod names and addresses, like a DNS name.
	maxNameLen = 253
	// maxAgentIDLen bounds agent ids; the proxy issues 36-character UUIDs.
	maxAgentIDLen = 128
	// maxFuture is how far past the proxy's clock a time bound may lie.
	maxFuture = 24 * time.Hour
)

// minTime is the earliest time bound accepted: no BanyanDB node ran before.
var minTime = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// query parses the request's query string strictly: net/http's
// URL.Query drops malformed pairs silently.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &badRequest{msg: fmt.Sprintf("invalid query: %v", err)}
	}
	return q, nil
}

// single returns the one value of a single-valued parameter, "" when it is
// absent, and an error when it is given more than once.
func single(q url.Values, name string) (string, error) {
	switch vs := q[name]; len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	default:
		return "", badParam(name, "given %d times; give it once", len(vs))
	}
}

// parseRole reads the role parameter; ok is false when it is absent.
func parseRole(q url.Values) (r roles.Role, ok bool, err error) {
	v, err := single(q, "role")
	if err != nil || v == "" {
		return r, false, err
	}
	r, err = roles.Parse(v)
	if err != nil {
		return r, false, badParam("role", "%v", err)
	}
	return r, true, nil
}

// filterOf reads the query and its agent selection parameters.
func filterOf(r *http.Request) (registry.Filter, error) {
	q, err := query(r)
	if err != nil {
		return registry.Filter{}, err
	}
	return parseFilter(q)
}

// parseFilter reads the agent selection parameters of DESIGN.md §1.4:
// role, address, pod_name and agent_id.
func parseFilter(q url.Values) (registry.Filter, error) {
	var f registry.Filter
	var err error
	if f.Role, f.HasRole, err = parseRole(q); err != nil {
		return f, err
	}
	if f.Address, err = single(q, "address"); err != nil {
		return f, err
	}
	if f.Address != "" {
		if err := validateAddress(f.Address); err != nil {
			return f, badParam("address", "%q: %v (want ip or ip:port)", f.Address, err)
		}
	}
	if f.PodName, err = single(q, "pod_name"); err != nil {
		return f, err
	}
	if err := validateName(f.PodName, maxNameLen); err != nil {
		return f, badParam("pod_name", "%q: %v", f.PodName, err)
	}
	if f.AgentID, err = single(q, "agent_id"); err != nil {
		return f, err
	}
	if err := validateAgentID(f.AgentID); err != nil {
		return f, badParam("agent_id", "%q: %v", f.AgentID, err)
	}
	return f, nil
}

// validateAddress accepts an IP, a host name, or either with a port.
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
	switch {
	case host == "":
		return fmt.Errorf("empty host")
	case net.ParseIP(host) != nil:
		return nil
	case len(host) > maxNameLen:
		return fmt.Errorf("host longer than %d bytes", maxNameLen)
	}
	for _, c := range host {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '.' && c != '_' {
			return fmt.Errorf("host %q is neither an IP nor a host name", host)
		}
	}
	return nil
}

// validateName accepts "" or valid UTF-8 of at most max bytes without
// spaces or control characters.
func validateName(v string, max int) error {
	switch {
	case len(v) > max:
		return fmt.Errorf("longer than %d bytes", max)
	case !utf8.ValidString(v):
		return fmt.Errorf("not UTF-8")
	case strings.IndexFunc(v, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) >= 0:
		return fmt.Errorf("contains spaces or control characters")
	}
	return nil
}

// validateAgentID accepts "" or an id made of letters, digits, '-', '_'
// and '.', like the UUIDs the proxy issues.
func validateAgentID(v string) error {
	if len(v) > maxAgentIDLen {
		return fmt.Errorf("longer than %d bytes", maxAgentIDLen)
	}
	for _, c := range v {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("not an agent id (letters, digits, '-', '_', '.')")
		}
	}
	return nil
}

// isFiltered reports whether the request narrows the agent selection.
func isFiltered(f registry.Filter) bool {
	return f.HasRole || f.Address != "" || f.PodName != "" || f.AgentID != ""
}

// parseWindow reads start_time and end_time (RFC3339, fractions allowed),
// each between 2000-01-01 and a day past now.
func parseWindow(q url.Values, now time.Time) (series.Window, error) {
	var w series.Window
	latest := now.Add(maxFuture)
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start_time", &w.Start}, {"end_time", &w.End}} {
		v, err := single(q, p.name)
		if err != nil {
			return w, err
		}
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return w, badParam(p.name, "%q is not an RFC3339 time such as 2026-01-02T15:04:05Z", v)
		}
		if t.Before(minTime) || t.After(latest) {
			return w, badParam(p.name, "%s is outside %s .. %s (now + %s)", v,
				minTime.Format(time.RFC3339), latest.UTC().Format(time.RFC3339), maxFuture)
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
	if err != nil || !(secs > 0) { // NaN too
		return def
	}
	// Cap before converting: a float beyond int64 nanoseconds does not
	// convert to a Duration.
	d := time.Duration(min(secs, 2*maxBudget.Seconds()) * float64(time.Second))
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
