package httpapi

import (
	"errors"
	"net/http"
	"strconv"
)

// Admission bounds the requests served at once per endpoint class. Every
// field must be positive.
type Admission struct {
	// Metrics bounds the distinct /metrics collections (identical
	// concurrent scrapes share one and take one slot) and the
	// /metrics-windows requests.
	Metrics int
	// Cluster bounds the cluster views, /diagnostics and profile lists.
	Cluster int
	// Downloads bounds the profile downloads being streamed.
	Downloads int
}

// The endpoint classes of admission control, as
// fodc_proxy_http_requests_rejected_total labels them.
const (
	classMetrics   = "metrics"
	classCluster   = "cluster"
	classDownloads = "downloads"
)

// errBusy is a request refused because its class is full.
var errBusy = errors.New("the proxy is serving as many of these requests as it allows; retry shortly")

// retryAfterSeconds is what a refused client is told to wait.
const retryAfterSeconds = 1

// gate is one class's slots: a buffered channel used as a semaphore.
type gate chan struct{}

// admit takes a slot of class without waiting. It returns the release
// function, or false (counted) when the class is full.
func (a *API) admit(class string) (release func(), ok bool) {
	g := a.gates[class]
	select {
	case g <- struct{}{}:
		return func() { <-g }, true
	default:
		a.metrics.rejected.WithLabelValues(class).Inc()
		return nil, false
	}
}

// refuseBusy answers 503 with Retry-After and the JSON error envelope.
func refuseBusy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	writeError(w, http.StatusServiceUnavailable, errBusy.Error())
}

// admitted wraps h so that it runs only with a slot of class.
func (a *API) admitted(class string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, ok := a.admit(class)
		if !ok {
			refuseBusy(w)
			return
		}
		defer release()
		h(w, r)
	}
}
