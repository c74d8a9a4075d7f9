// Package ui is the proxy's web console: static HTML, CSS and JavaScript
// embedded in the binary and served under /ui/. It uses only the public
// HTTP API (same origin, so the API's authentication applies to it as to
// any client) and needs no network access: its one library, Cytoscape.js
// (graph layout and drawing), is vendored under static/vendor with its
// licence, at the version its file name says.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the console's files; mount it with the /ui/ prefix
// stripped.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	fileServer := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}
