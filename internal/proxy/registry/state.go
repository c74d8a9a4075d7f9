package registry

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fodc-go/fodc/internal/roles"
)

// The state file keeps the identities of the nodes the registry knew, so
// that a restarted proxy still lists the nodes that do not come back. It
// holds no collected data.

// stateVersion is the version of the state file format that this package
// writes and reads; other versions are refused.
const stateVersion = 1

// maxStateFileSize is the largest state file New loads and Close or Run
// write.
const maxStateFileSize = 8 << 20

// restartDetail is the DisconnectReason of entries loaded from the state
// file.
const restartDetail = "proxy restart"

// stateDoc is the JSON document of the state file.
type stateDoc struct {
	Version int          `json:"version"`
	SavedAt time.Time    `json:"saved_at"`
	Agents  []stateAgent `json:"agents"`
}

// stateAgent is one node in the state file.
type stateAgent struct {
	AgentID          string                  `json:"agent_id,omitempty"`
	PodName          string                  `json:"pod_name,omitempty"`
	RoleName         string                  `json:"role_name"`
	Role             string                  `json:"role,omitempty"` // for readers; recomputed on load
	ContainerNames   []string                `json:"container_names,omitempty"`
	Primary          *stateAddress           `json:"primary,omitempty"`
	Secondary        map[string]stateAddress `json:"secondary,omitempty"`
	Labels           map[string]string       `json:"labels,omitempty"`
	RegisteredAt     time.Time               `json:"registered_at"`
	LastSeen         time.Time               `json:"last_seen"`
	Status           Status                  `json:"status"`
	DisconnectReason string                  `json:"disconnect_reason,omitempty"`
}

// stateAddress is an Address in the state file.
type stateAddress struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
}

// stateLocked builds the document to save: at most MaxAgents entries,
// online ones first, then the most recently seen.
func (r *Registry) stateLocked() *stateDoc {
	es := make([]*entry, 0, len(r.agents))
	for _, e := range r.agents {
		es = append(es, e)
	}
	slices.SortFunc(es, func(x, y *entry) int {
		return cmp.Or(statusRank(x.agent.Status)-statusRank(y.agent.Status),
			y.agent.LastSeen.Compare(x.agent.LastSeen), cmp.Compare(x.agent.ID, y.agent.ID))
	})
	if len(es) > r.maxAgents {
		es = es[:r.maxAgents]
	}
	doc := &stateDoc{Version: stateVersion, SavedAt: r.now().UTC(), Agents: make([]stateAgent, 0, len(es))}
	for _, e := range es {
		a := &e.agent
		sa := stateAgent{
			AgentID:          a.ID,
			PodName:          a.PodName,
			RoleName:         a.RoleName,
			Role:             a.Role.String(),
			ContainerNames:   slices.Clone(a.ContainerNames),
			Labels:           cloneLabels(a.Labels),
			RegisteredAt:     a.RegisteredAt.UTC(),
			LastSeen:         a.LastSeen.UTC(),
			Status:           a.Status,
			DisconnectReason: a.DisconnectReason,
		}
		if a.Primary != (Address{}) {
			p := stateAddress(a.Primary)
			sa.Primary = &p
		}
		if len(a.Secondary) > 0 {
			sa.Secondary = make(map[string]stateAddress, len(a.Secondary))
			for name, addr := range a.Secondary {
				sa.Secondary[name] = stateAddress(addr)
			}
		}
		doc.Agents = append(doc.Agents, sa)
	}
	return doc
}

// unsaved reports whether the state file misses changes or heartbeats.
func (r *Registry) unsaved() bool {
	if r.stateFile == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.closed && (r.dirty || r.seen)
}

// saveState writes the state file if anything changed since the last save.
// After Close it does nothing: Close wrote the final state.
func (r *Registry) saveState() error {
	if r.stateFile == "" {
		return nil
	}
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.mu.Lock()
	if r.closed || (!r.dirty && !r.seen) {
		r.mu.Unlock()
		return nil
	}
	st := r.stateLocked()
	r.dirty, r.seen = false, false
	r.mu.Unlock()
	if err := r.writeState(st); err != nil {
		r.mu.Lock()
		r.dirty = true // retried after the next sweep
		r.mu.Unlock()
		return err
	}
	return nil
}

func (r *Registry) logSaveErr(err error) {
	if err != nil {
		r.logger.Error("Saving registry state failed", "file", r.stateFile, "err", err)
	}
}

// writeState encodes st and replaces the state file with it atomically.
func (r *Registry) writeState(st *stateDoc) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("registry state file %s: encode: %w", r.stateFile, err)
	}
	data = append(data, '\n')
	if len(data) > maxStateFileSize {
		return fmt.Errorf("registry state file %s: %d agents take %d bytes, more than the %d-byte limit; not saved",
			r.stateFile, len(st.Agents), len(data), maxStateFileSize)
	}
	if err := writeFileAtomic(r.stateFile, data, r.rename); err != nil {
		return fmt.Errorf("registry state file %s: %w", r.stateFile, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file next to path, syncs it
// and renames it over path, so that readers see the old or the new content
// but never a part. The directory is synced afterwards, where supported,
// so that the rename survives a crash.
func writeFileAtomic(path string, data []byte, rename func(oldpath, newpath string) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				_ = f.Close()
			}
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // not supported everywhere; the rename itself is done
		_ = d.Close()
	}
	return nil
}

// readState reads and checks the state file. A missing file yields nil and
// no error; any other problem is an error that names the file.
func readState(path string) (*stateDoc, error) {
	doc, err := readStateFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry state file %s: %w; fix or delete the file to start with an empty registry", path, err)
	}
	return doc, nil
}

func readStateFile(path string) (*stateDoc, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() > maxStateFileSize {
		return nil, fmt.Errorf("file is %d bytes, larger than the %d-byte limit", fi.Size(), maxStateFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateFileSize {
		return nil, fmt.Errorf("file grew past the %d-byte limit while being read", maxStateFileSize)
	}
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	switch {
	case head.Version == nil:
		return nil, errors.New("corrupt: no version field")
	case *head.Version != stateVersion:
		return nil, fmt.Errorf("unsupported version %d (this proxy reads version %d)", *head.Version, stateVersion)
	}
	var doc stateDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	return &doc, nil
}

// restored is a checked state file entry ready to become an offline entry.
type restored struct {
	agent Agent
	key   string
	index int
}

// restore adds the nodes of doc as offline entries with ReasonRestart.
// Nodes already silent for the cleanup timeout are skipped, as are older
// duplicates of a node and, past MaxAgents, the nodes seen longest ago.
func (r *Registry) restore(doc *stateDoc) error {
	if doc == nil {
		return nil
	}
	items := make([]restored, 0, len(doc.Agents))
	for i, sa := range doc.Agents {
		a, err := sa.agent()
		if err != nil {
			return fmt.Errorf("registry state file %s: agents[%d]: %w; fix or delete the file to start with an empty registry", r.stateFile, i, err)
		}
		items = append(items, restored{agent: a, key: identityKey(a.Identity), index: i})
	}
	slices.SortFunc(items, func(x, y restored) int {
		return cmp.Or(y.agent.LastSeen.Compare(x.agent.LastSeen), cmp.Compare(x.index, y.index))
	})
	now := r.now()
	var expired, duplicates, overCap int
	for _, it := range items {
		switch {
		case now.Sub(it.agent.LastSeen) > r.cleanupTimeout:
			expired++
			continue
		case r.byKey[it.key] != nil:
			duplicates++
			continue
		case len(r.agents) >= r.maxAgents:
			overCap++
			continue
		}
		a := it.agent
		if _, dup := r.agents[a.ID]; dup || a.ID == "" {
			a.ID = r.newID()
			if _, dup := r.agents[a.ID]; dup || a.ID == "" {
				return fmt.Errorf("generate agent id: got %q, which is empty or already in use", a.ID)
			}
		}
		a.Status = StatusOffline
		a.DisconnectedAt = now
		a.DisconnectReason = restartDetail
		e := &entry{agent: a, key: it.key, reason: ReasonRestart}
		e.gone, e.markGone = newGone()
		e.markGone()
		r.agents[a.ID] = e
		r.byKey[it.key] = e
	}
	r.logger.Info("Registry state loaded", "file", r.stateFile, "agents", len(r.agents),
		"skipped_expired", expired, "skipped_duplicates", duplicates, "skipped_over_max_agents", overCap)
	return nil
}

// agent checks a saved node and turns it into an Agent (status not set).
func (sa stateAgent) agent() (Agent, error) {
	if strings.TrimSpace(sa.RoleName) == "" {
		return Agent{}, errors.New("role_name is empty")
	}
	role, err := roles.FromRegistration(sa.RoleName, sa.Labels)
	if err != nil {
		return Agent{}, fmt.Errorf("role_name: %w", err)
	}
	if sa.LastSeen.IsZero() {
		return Agent{}, errors.New("last_seen is missing")
	}
	id := Identity{
		RoleName:       sa.RoleName,
		Role:           role,
		PodName:        sa.PodName,
		ContainerNames: slices.Clone(sa.ContainerNames),
		Labels:         cloneLabels(sa.Labels),
	}
	if sa.Primary != nil {
		id.Primary = Address(*sa.Primary)
	}
	if id.PodName == "" && id.Primary.IP == "" {
		return Agent{}, errors.New("neither pod_name nor primary.ip is set")
	}
	if len(sa.Secondary) > 0 {
		id.Secondary = make(map[string]Address, len(sa.Secondary))
		for name, addr := range sa.Secondary {
			id.Secondary[name] = Address(addr)
		}
	}
	return Agent{
		ID:            sa.AgentID,
		Identity:      id,
		RegisteredAt:  sa.RegisteredAt,
		LastHeartbeat: sa.LastSeen,
		LastSeen:      sa.LastSeen,
	}, nil
}
