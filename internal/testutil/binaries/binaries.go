// Package binaries builds the repository's commands once per test process,
// for tests that run them as real processes (test/e2e, test/fault), and
// collects a child process's output safely.
package binaries

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	once sync.Once
	dir  string
	err  error
)

// Path returns the path of the command name (fodc-proxy, fodc-agent,
// fodc-demo, fodc-bench), building every command under cmd/ on the first
// call. A build failure fails t.
func Path(t testing.TB, name string) string {
	t.Helper()
	once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			err = fmt.Errorf("binaries: cannot locate the module")
			return
		}
		// internal/testutil/binaries/binaries.go -> the module root.
		root := filepath.Join(filepath.Dir(file), "..", "..", "..")
		dir, err = os.MkdirTemp("", "fodc-bin-")
		if err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
		cmd.Dir = root
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build: %v\n%s", berr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// Cleanup removes what Path built; call it from TestMain once the tests
// have run.
func Cleanup() {
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}

// SyncBuffer collects a child process's output; it is safe for concurrent
// use.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
