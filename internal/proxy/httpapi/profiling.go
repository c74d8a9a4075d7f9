package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/fodc-go/fodc/internal/agent/ondemand"
	"github.com/fodc-go/fodc/internal/proxy/profiling"
)

// profilingRoot serves /profiling: POST starts profiles, GET lists them.
func (a *API) profilingRoot(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		a.admitted(classCluster, a.profilingStart)(w, r)
	case http.MethodGet:
		a.admitted(classCluster, a.profilingList)(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use GET or POST", r.Method))
	}
}

func writeJSONCode(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// profilingStart requests a profile of every online node the filter
// selects: 202 when at least one started, else 409 when a node was busy,
// 501 when every agent lacks the extension, 502 when agents refused.
func (a *API) profilingStart(w http.ResponseWriter, r *http.Request) {
	if a.opts.Profiling == nil {
		writeError(w, http.StatusServiceUnavailable, "on-demand profiling not available")
		return
	}
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	q, _ := query(r)
	typ, err := single(q, "type")
	if err != nil {
		respondErr(w, err)
		return
	}
	secs, err := single(q, "seconds")
	if err != nil {
		respondErr(w, err)
		return
	}
	seconds := uint64(ondemand.DefaultSeconds)
	if secs != "" {
		if seconds, err = strconv.ParseUint(secs, 10, 32); err != nil {
			respondErr(w, badParam("seconds", "%q: not a whole number", secs))
			return
		}
	}
	if err := profiling.Validate(typ, uint32(seconds)); err != nil {
		respondErr(w, badParam("type or seconds", "%v", err))
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	results, err := a.opts.Profiling.Start(ctx, f, typ, uint32(seconds))
	if err != nil {
		respondErr(w, badParam("type or seconds", "%v", err))
		return
	}
	if len(results) == 0 {
		writeError(w, http.StatusNotFound, "no online agent matches the selection")
		return
	}
	code := http.StatusBadGateway
	counts := map[string]int{}
	for _, res := range results {
		counts[res.Code]++
	}
	switch {
	case counts[profiling.CodeStarted] > 0:
		code = http.StatusAccepted
	case counts[profiling.CodeBusy] > 0:
		code = http.StatusConflict
	case counts[profiling.CodeUnsupported] == len(results):
		code = http.StatusNotImplemented
	}
	writeJSONCode(w, code, struct {
		Results []profiling.Result `json:"results"`
	}{results})
}

func (a *API) profilingList(w http.ResponseWriter, r *http.Request) {
	if a.opts.Profiling == nil {
		writeError(w, http.StatusServiceUnavailable, "on-demand profiling not available")
		return
	}
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	writeJSONCode(w, http.StatusOK, a.opts.Profiling.List(f))
}

// profilingDownload serves one finished profile: 409 while it runs, 422
// when it failed.
func (a *API) profilingDownload(w http.ResponseWriter, r *http.Request) {
	if a.opts.Profiling == nil {
		writeError(w, http.StatusServiceUnavailable, "on-demand profiling not available")
		return
	}
	id := r.PathValue("id")
	if err := validateName(id, maxNameLen); err != nil {
		respondErr(w, badParam("id", "%q: %v", id, err))
		return
	}
	e, data, ok := a.opts.Profiling.Get(id)
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no profile %s (unknown, or dropped to keep within the byte budget)", id))
		return
	case e.Status == profiling.StatusRunning:
		writeError(w, http.StatusConflict, fmt.Sprintf("profile %s is still running", id))
		return
	case e.Status == profiling.StatusFailed:
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("profile %s failed: %s", id, e.Error))
		return
	}
	ext := ".pprof"
	if e.Type == "trace" {
		ext = ".trace"
	}
	name := safeFileName(e.PodName + "-" + e.Type + "-" + e.ID + ext)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

// configRefresh re-collects every node's configuration now, bypassing
// the cache, and answers like GET /cluster/config.
func (a *API) configRefresh(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use POST", r.Method))
		return
	}
	if a.opts.Cluster != nil {
		a.opts.Cluster.ForgetConfig()
	}
	a.clusterConfig(w, r)
}

// safeFileName replaces every character but letters, digits, '.', '-'
// and '_' with '_'.
func safeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}
