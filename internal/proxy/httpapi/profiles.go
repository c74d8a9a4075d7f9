package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
)

func (a *API) diagnostics(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	if a.opts.Diagnostics == nil {
		writeError(w, http.StatusServiceUnavailable, "crash diagnostics collector not available")
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	recs := a.opts.Diagnostics.Collect(ctx, f)
	w.Header().Set("Content-Type", "application/json")
	if err := diagnostics.WriteJSON(w, recs); err != nil {
		a.logger.Debug("Writing /diagnostics answer", "err", err)
	}
}

func (a *API) pressureProfiles(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	if a.opts.Pressure == nil {
		writeError(w, http.StatusServiceUnavailable, "pressure profile collector not available")
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	entries, err := a.opts.Pressure.List(ctx, f)
	if err != nil {
		// The budget ran out: answer with what is cached, and say so.
		w.Header().Set("X-Fodc-Partial", err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	if err := pressure.WriteJSON(w, entries); err != nil {
		a.logger.Debug("Writing /pressure-profiles answer", "err", err)
	}
}

// flushWriter flushes after every write so that a download reaches the
// client chunk by chunk.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (a *API) pressureDownload(w http.ResponseWriter, r *http.Request) {
	pod, id, typ := r.PathValue("pod"), r.PathValue("profile_id"), r.PathValue("type")
	for _, p := range []struct{ name, v string }{{"pod_name", pod}, {"profile_id", id}} {
		if err := validateName(p.v, maxNameLen); err != nil {
			respondErr(w, badParam(p.name, "%q: %v", p.v, err))
			return
		}
	}
	if a.opts.Pressure == nil {
		writeError(w, http.StatusServiceUnavailable, "pressure profile collector not available")
		return
	}
	rc := http.NewResponseController(w)
	// A download lasts as long as the file takes; the client's going away
	// cancels r.Context().
	_ = rc.SetWriteDeadline(time.Time{})
	started := false
	_, err := a.opts.Pressure.Download(r.Context(), pod, id, typ, func(filename string) io.Writer {
		started = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filename))
		w.WriteHeader(http.StatusOK)
		return flushWriter{w: w, rc: rc}
	})
	switch {
	case err == nil:
	case started && r.Context().Err() != nil:
		a.logger.Debug("Profile download abandoned by the client", "pod_name", pod, "profile_id", id)
	case started:
		// Mid-stream failure: the body is truncated. Aborting the
		// connection (net/http's documented way) keeps the client from
		// taking it for a whole file.
		a.logger.Warn("Profile download interrupted", "pod_name", pod, "profile_id", id, "err", err)
		panic(http.ErrAbortHandler)
	case errors.Is(err, pressure.ErrUnknownType):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid type: %q (want heap or goroutine)", typ))
	case errors.Is(err, pressure.ErrProfileNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusNotFound, "profile not available: "+err.Error())
	}
}
