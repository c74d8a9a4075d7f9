package httpapi

// The proxy's JSON error envelope, shared by every HTTP handler so that
// clients see one error shape.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// writeError sends {"status":"error","error":msg} with the given status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}{"error", msg})
}

// badRequest is an input error; its text names the parameter at fault.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

// badParam returns a badRequest for parameter name.
func badParam(name, format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf("invalid %s: %s", name, fmt.Sprintf(format, args...))}
}

// respondErr maps err to a status code: 400 for a badRequest, 500 otherwise.
func respondErr(w http.ResponseWriter, err error) {
	var br *badRequest
	if errors.As(err, &br) {
		writeError(w, http.StatusBadRequest, br.Error())
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}
