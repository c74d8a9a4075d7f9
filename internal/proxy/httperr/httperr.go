// Package httperr writes the proxy's JSON error envelope, shared by every
// HTTP handler so that clients see one error shape.
package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Write sends {"status":"error","error":msg} with the given status code.
func Write(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}{"error", msg})
}

// BadRequest is an input error; its text names the parameter at fault.
type BadRequest struct{ Msg string }

func (e *BadRequest) Error() string { return e.Msg }

// BadParam returns a BadRequest for parameter name.
func BadParam(name, format string, args ...any) error {
	return &BadRequest{Msg: fmt.Sprintf("invalid %s: %s", name, fmt.Sprintf(format, args...))}
}

// Respond maps err to a status code: 400 for a BadRequest, 500 otherwise.
func Respond(w http.ResponseWriter, err error) {
	var br *BadRequest
	if errors.As(err, &br) {
		Write(w, http.StatusBadRequest, br.Error())
		return
	}
	Write(w, http.StatusInternalServerError, err.Error())
}
