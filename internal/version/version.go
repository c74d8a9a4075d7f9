// Package version holds the build version, set with
// -ldflags "-X github.com/fodc-go/fodc/internal/version.Version=...".
package version

// Version of the binaries.
var Version = "dev"
