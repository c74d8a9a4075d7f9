package crashwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// recordedArtifact is the artifact banyand wrote in the standalone
// recording.
const recordedArtifact = "20261202T114109.838622956Z-fixture-debug-panic-26319"

func fixtureDir(t *testing.T) string {
	t.Helper()
	d, err := fixture.NodeDir()
	require.NoError(t, err)
	return filepath.Join(d, "standalone.files", "panic-artifact-dir", recordedArtifact)
}

// copyArtifact copies the recorded artifact into root under name, the
// directory first and panic.json last, as banyand writes it.
func copyArtifact(t *testing.T, root, name string) {
	t.Helper()
	src := fixtureDir(t)
	dst := filepath.Join(root, name)
	require.NoError(t, os.Mkdir(dst, 0o755))
	for _, f := range []string{"deep-dump.json", PanicFile} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, f), b, 0o600))
	}
}

func start(t *testing.T, opts Options) *Watcher {
	t.Helper()
	w := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	select {
	case <-w.Ready():
	case <-time.After(wait):
		t.Fatal("first scan did not finish")
	}
	return w
}

// waitStored waits, on change notifications, until n records were stored
// in all.
func waitStored(t *testing.T, w *Watcher, n int) {
	t.Helper()
	deadline := time.After(wait)
	for {
		ch := w.Changed()
		if w.Stored() >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d records stored after %s, want %d", w.Stored(), wait, n)
		}
	}
}

// waitRecords waits, on change notifications, until n records are stored.
func waitRecords(t *testing.T, w *Watcher, n int) []*fodcv1.StreamCrashDiagnosticsRequest {
	t.Helper()
	deadline := time.After(wait)
	for {
		ch := w.Changed()
		if recs := w.Records(); len(recs) >= n {
			return recs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d records after %s, want %d", len(w.Records()), wait, n)
		}
	}
}

// The recorded artifact yields the record the upstream agent sent to the
// proxy in the standalone recording (all but fetched_at and the source
// path), and it is picked up from events alone: the rescan is an hour.
func TestRecordedArtifactMatchesRecordedFrame(t *testing.T) {
	root := t.TempDir()
	w := start(t, Options{Dir: root, Rescan: time.Hour})
	copyArtifact(t, root, recordedArtifact)
	recs := waitRecords(t, w, 1)

	rec, err := fixture.LoadNode("standalone.proxy")
	require.NoError(t, err)
	frames := rec.Frames(fixture.MethodStreamCrashDiagnostics, fixture.AgentToProxy)
	require.Len(t, frames, 1)
	m, err := frames[0].Message()
	require.NoError(t, err)
	want := m.(*fodcv1.StreamCrashDiagnosticsRequest)
	require.Equal(t, "file://"+root, recs[0].GetSourceEndpoint())
	got := proto.Clone(recs[0]).(*fodcv1.StreamCrashDiagnosticsRequest)
	got.FetchedAt, want.FetchedAt = nil, nil
	got.SourceEndpoint, want.SourceEndpoint = "", ""
	require.True(t, proto.Equal(want, got), "got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
}

// A half-written panic.json delays only its own artifact: a second
// artifact written afterwards is stored at once, and the first follows as
// soon as its file is complete.
func TestHalfWrittenPanicDoesNotBlockOthers(t *testing.T) {
	root := t.TempDir()
	w := start(t, Options{Dir: root, Rescan: time.Hour})
	full, err := os.ReadFile(filepath.Join(fixtureDir(t), PanicFile))
	require.NoError(t, err)

	first := "20261202T114100.000000000Z-first-1"
	require.NoError(t, os.Mkdir(filepath.Join(root, first), 0o755))
	f, err := os.OpenFile(filepath.Join(root, first, PanicFile), os.O_CREATE|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Write(full[:len(full)/2])
	require.NoError(t, err)

	second := "20261202T114200.000000000Z-second-2"
	copyArtifact(t, root, second)
	recs := waitRecords(t, w, 1)
	require.Equal(t, second, recs[0].GetArtifactDir())

	_, err = f.Write(full[len(full)/2:])
	require.NoError(t, err)
	recs = waitRecords(t, w, 2)
	require.Equal(t, first, recs[1].GetArtifactDir())
	require.Equal(t, "fixture/debug panic", recs[1].GetPanicRecord().GetComponent())
}

// The artifact directory appears first and panic.json much later: the
// watch of the directory itself sees it, without any rescan.
func TestNestedCreateSeenWithoutRescan(t *testing.T) {
	root := t.TempDir()
	w := start(t, Options{Dir: root, Rescan: time.Hour, Retry: time.Hour})
	name := "20261202T114300.000000000Z-late-3"
	require.NoError(t, os.Mkdir(filepath.Join(root, name), 0o755))
	// Wait until the watcher has seen the directory (it is pending).
	require.Eventually(t, func() bool { return len(w.Records()) == 0 && w.pendingLen() == 1 }, wait, time.Millisecond)
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), PanicFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, name, PanicFile), b, 0o600))
	recs := waitRecords(t, w, 1)
	require.Equal(t, []string{PanicFile}, recs[0].GetFiles())
}

// Artifacts present before the start are stored by the first scan; a
// root that does not exist yet is found by the rescan.
func TestInitialScanAndLateRoot(t *testing.T) {
	root := t.TempDir()
	copyArtifact(t, root, recordedArtifact)
	w := start(t, Options{Dir: root, Rescan: time.Hour})
	require.Len(t, w.Records(), 1, "stored before Ready")

	late := filepath.Join(t.TempDir(), "later")
	w2 := start(t, Options{Dir: late, Rescan: 20 * time.Millisecond})
	require.Empty(t, w2.Records())
	require.NoError(t, os.Mkdir(late, 0o755))
	copyArtifact(t, late, recordedArtifact)
	waitRecords(t, w2, 1)
}

// The store is bounded; an evicted artifact is never read again, and an
// artifact is stored once however often it changes.
func TestBoundsAndOnce(t *testing.T) {
	root := t.TempDir()
	w := start(t, Options{Dir: root, Rescan: time.Hour, MaxArtifacts: 2})
	for i, name := range []string{"a-1", "b-2", "c-3"} {
		copyArtifact(t, root, name)
		waitStored(t, w, i+1)
	}
	recs := w.Records()
	require.Len(t, recs, 2)
	require.Equal(t, "b-2", recs[0].GetArtifactDir())
	// Change an evicted and a stored artifact and rescan: nothing is
	// stored again.
	require.NoError(t, os.WriteFile(filepath.Join(root, "a-1", "extra.txt"), []byte("x"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "c-3", "extra.txt"), []byte("x"), 0o600))
	w.rescanNow()
	require.Len(t, w.Records(), 2)
	require.Equal(t, 3, w.Stored())
	require.Equal(t, []string{"deep-dump.json", PanicFile}, w.Records()[1].GetFiles())
}

func TestDecodeEmptyRecord(t *testing.T) {
	r, err := decodePanic([]byte(`{"recovered":true}`))
	require.NoError(t, err)
	require.Nil(t, r)
	_, err = decodePanic([]byte(`{"component":"x"`))
	require.Error(t, err)
	_, err = decodePanic([]byte(" \n"))
	require.Error(t, err)
}
