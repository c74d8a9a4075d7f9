package httpapi

// Roles on the HTTP API. exporter-toolkit authenticates users (basic_auth_
// users of the web configuration); this middleware decides what each may
// do. Every route needs a role: viewer for reads, operator for what makes
// nodes work or hands out profiles and crash artifacts. Without a roles
// file it is not installed and every (authenticated) user may do
// everything, as before.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Role is what a user may do; a higher role includes the lower ones.
type Role int

// The roles.
const (
	RoleNone Role = iota
	RoleViewer
	RoleOperator
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	}
	return "none"
}

func parseAPIRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "viewer":
		return RoleViewer, nil
	case "operator":
		return RoleOperator, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q (want viewer or operator)", s)
}

// Rule gives the routes whose path starts with Prefix (and, when Method is
// set, use that method) a required role. The first matching rule wins; a
// route no rule matches needs RoleViewer.
type Rule struct {
	Method string
	Prefix string
	Role   Role
}

// DefaultRules are the operator routes of the API: profile downloads,
// crash artifacts, the on-demand profiling endpoints (POST under
// /profiling) and the proxy's own pprof (--enable-pprof).
func DefaultRules() []Rule {
	return []Rule{
		{Prefix: "/pressure-profiles/", Role: RoleOperator},
		{Prefix: "/diagnostics", Role: RoleOperator},
		{Method: http.MethodPost, Prefix: "/profiling", Role: RoleOperator},
		{Prefix: "/debug/pprof", Role: RoleOperator},
	}
}

// Roles maps users to roles and routes to required roles. It is safe for
// concurrent use.
type Roles struct {
	mu    sync.RWMutex
	users map[string]Role
	rules []Rule
}

// rolesFile is the YAML document of --web.roles-file:
//
//	users:
//	  grafana: viewer
//	  alice: operator
type rolesFile struct {
	Users map[string]string `yaml:"users"`
}

// LoadRoles reads a roles file. Unknown keys and roles are errors.
func LoadRoles(file string) (*Roles, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("roles file: %w", err)
	}
	var doc rolesFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("roles file %s: %w", file, err)
	}
	users := make(map[string]Role, len(doc.Users))
	var errs []error
	for u, r := range doc.Users {
		role, err := parseAPIRole(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("roles file %s: user %q: %w", file, u, err))
		}
		users[u] = role
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return NewRoles(users, DefaultRules()), nil
}

// NewRoles returns users' roles under rules.
func NewRoles(users map[string]Role, rules []Rule) *Roles {
	return &Roles{users: users, rules: rules}
}

// AddRule appends a rule, for endpoints added later.
func (rs *Roles) AddRule(r Rule) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.rules = append(rs.rules, r)
}

// Required returns the role a request needs.
func (rs *Roles) Required(r *http.Request) Role {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for _, rule := range rs.rules {
		if (rule.Method == "" || rule.Method == r.Method) && strings.HasPrefix(r.URL.Path, rule.Prefix) {
			return rule.Role
		}
	}
	return RoleViewer
}

// Guard lets a request through when its user's role is enough, and answers
// 401 (no user) or 403 (too low a role) with the JSON error envelope. It
// trusts the user name of basic auth because exporter-toolkit has checked
// the password before the request gets here (--web.roles-file requires
// --web.config.file).
func (rs *Roles) Guard(h http.Handler) http.Handler {
	if rs == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := rs.Required(r)
		user, _, ok := r.BasicAuth()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="fodc-proxy"`)
			writeError(w, http.StatusUnauthorized, "authentication required")
			return
		}
		rs.mu.RLock()
		have := rs.users[user]
		rs.mu.RUnlock()
		if have < need {
			writeError(w, http.StatusForbidden, fmt.Sprintf("user %q has role %s; %s %s needs %s", user, have, r.Method, r.URL.Path, need))
			return
		}
		h.ServeHTTP(w, r)
	})
}
