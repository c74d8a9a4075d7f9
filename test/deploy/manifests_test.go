// Package deploy checks the deployment files in deploy/: every Kubernetes
// manifest decodes strictly into the Kubernetes API types (unknown fields
// are errors), the FODC containers' arguments parse with the binaries' own
// flag sets, and ports, probes and the Service agree with the flags and
// with the binaries' defaults. No cluster is needed.
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fodc-go/fodc/internal/agent"
	"github.com/fodc-go/fodc/internal/logging"
	"github.com/fodc-go/fodc/internal/proxy"
)

const root = "../../deploy"

// objects decodes every document of every manifest strictly.
func objects(t *testing.T) (deployments []appsv1.Deployment, sets []appsv1.StatefulSet, services []corev1.Service) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "kubernetes", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			require.NoError(t, err, "%s document %d", f, i)
			var meta struct{ Kind string }
			require.NoError(t, json.Unmarshal(js, &meta))
			strict := func(v any) {
				dec := json.NewDecoder(bytes.NewReader(js))
				dec.DisallowUnknownFields()
				require.NoError(t, dec.Decode(v), "%s document %d (%s)", f, i, meta.Kind)
			}
			switch meta.Kind {
			case "Deployment":
				var d appsv1.Deployment
				strict(&d)
				deployments = append(deployments, d)
			case "StatefulSet":
				var s appsv1.StatefulSet
				strict(&s)
				sets = append(sets, s)
			case "Service":
				var s corev1.Service
				strict(&s)
				services = append(services, s)
			case "Secret":
				var s corev1.Secret
				strict(&s)
			case "ConfigMap":
				var c corev1.ConfigMap
				strict(&c)
			default:
				t.Fatalf("%s document %d: kind %q not checked by this test", f, i, meta.Kind)
			}
		}
	}
	return deployments, sets, services
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// expand substitutes $(VAR) references the way the kubelet does, with
// sample values for the downward-API variables.
func expand(args []string) []string {
	sample := map[string]string{"POD_NAME": "banyandb-data-hot-0", "POD_IP": "10.0.0.5"}
	out := make([]string, len(args))
	re := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	for i, a := range args {
		out[i] = re.ReplaceAllStringFunc(a, func(m string) string { return sample[m[2:len(m)-1]] })
	}
	return out
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
	require.GreaterOrEqual(t, i, 0, "container %s", name)
	return cs[i]
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return int32(n)
}

func namedPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return 0
}

func requireHardened(t *testing.T, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	require.NotNil(t, pod.SecurityContext)
	require.True(t, *pod.SecurityContext.RunAsNonRoot, "%s runs as non-root", c.Name)
	require.NotNil(t, c.SecurityContext)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "%s has a read-only root", c.Name)
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.NotNil(t, c.Resources.Requests.Memory(), "%s requests memory", c.Name)
	require.False(t, c.Resources.Requests.Memory().IsZero(), "%s requests memory", c.Name)
}

func TestProxyManifests(t *testing.T) {
	deployments, _, services := objects(t)
	require.NotEmpty(t, deployments)
	for _, d := range deployments {
		t.Run(d.Name, func(t *testing.T) { checkProxyDeployment(t, d, services) })
	}
}

func checkProxyDeployment(t *testing.T, d appsv1.Deployment, services []corev1.Service) {
	c := container(t, d.Spec.Template.Spec.Containers, "fodc-proxy")
	requireHardened(t, d.Spec.Template.Spec, c)

	cfg := proxy.DefaultConfig()
	var logCfg logging.Config
	fs := pflag.NewFlagSet("fodc-proxy", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	logCfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(expand(c.Args)), "the proxy's flags")
	if cfg.Security.WebConfigFile == "" && cfg.Security.GRPCTLSCertFile == "" {
		// With security files, Validate reads them; they exist only in
		// the cluster (their Secrets are checked by TestWebSecret).
		require.NoError(t, cfg.Validate())
	}

	def := proxy.DefaultConfig()
	require.Equal(t, portOf(t, def.GRPCListenAddr), portOf(t, cfg.GRPCListenAddr), "the manifest keeps the default gRPC port")
	require.Equal(t, portOf(t, def.HTTPListenAddr), portOf(t, cfg.HTTPListenAddr), "the manifest keeps the default HTTP port")
	require.Equal(t, portOf(t, cfg.GRPCListenAddr), namedPort(t, c, "grpc"))
	require.Equal(t, portOf(t, cfg.HTTPListenAddr), namedPort(t, c, "http"))
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		require.NotNil(t, p)
		if cfg.Security.WebConfigFile != "" {
			// Basic auth guards every path: the kubelet probes the port.
			require.NotNil(t, p.TCPSocket)
			require.Equal(t, "http", p.TCPSocket.Port.String())
			continue
		}
		require.Contains(t, []string{"/health", "/-/healthy", "/-/ready"}, p.HTTPGet.Path)
		require.Equal(t, "http", p.HTTPGet.Port.String())
	}
	// Every file the flags name is on a mounted volume.
	for _, f := range []string{cfg.StateFile, cfg.Security.GRPCTLSCertFile, cfg.Security.GRPCTLSKeyFile, cfg.Security.GRPCClientCAFile,
		cfg.Security.WebConfigFile, cfg.Security.WebRolesFile} {
		if f == "" {
			continue
		}
		mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return strings.HasPrefix(f, m.MountPath+"/")
		})
		require.True(t, mounted, "%s is on a mounted volume", f)
	}
	ann := d.Spec.Template.Annotations
	require.Equal(t, "true", ann["prometheus.io/scrape"])
	require.Equal(t, strconv.Itoa(int(portOf(t, cfg.HTTPListenAddr))), ann["prometheus.io/port"])
	require.Equal(t, "/metrics", ann["prometheus.io/path"])
	for _, svc := range services {
		if svc.Spec.Selector["app.kubernetes.io/name"] != d.Spec.Template.Labels["app.kubernetes.io/name"] {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			require.Equal(t, sp.Port, namedPort(t, c, sp.TargetPort.String()), "service port %s", sp.Name)
		}
	}
}

func TestAgentSidecarManifest(t *testing.T) {
	_, sets, services := objects(t)
	require.NotEmpty(t, sets)
	for _, s := range sets {
		spec := s.Spec.Template.Spec
		c := container(t, spec.Containers, "fodc-agent")
		requireHardened(t, spec, c)
		cfg := agent.DefaultConfig()
		var logCfg logging.Config
		fs := pflag.NewFlagSet("fodc-agent", pflag.ContinueOnError)
		cfg.RegisterFlags(fs)
		logCfg.RegisterFlags(fs)
		args := expand(c.Args)
		require.NoError(t, fs.Parse(args), "the agent's flags")
		require.NoError(t, cfg.Validate())
		require.Equal(t, "banyandb-data-hot-0", cfg.PodName, "the pod name comes from the downward API")
		env := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				env[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		require.Equal(t, "metadata.name", env["POD_NAME"])
		require.Equal(t, portOf(t, cfg.HTTPListenAddr), namedPort(t, c, "agent-http"))
		require.Equal(t, "/healthz", c.ReadinessProbe.HTTPGet.Path)

		// The agent dials the proxy's Service on its gRPC port.
		host, port, err := net.SplitHostPort(cfg.ProxyAddr)
		require.NoError(t, err)
		svc := services[slices.IndexFunc(services, func(s corev1.Service) bool { return s.Name == host })]
		grpc := svc.Spec.Ports[slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "grpc" })]
		require.Equal(t, port, fmt.Sprint(grpc.Port))
	}
}

// The image is a static binary on a minimal base, run as a non-root user.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "docker", "Dockerfile"))
	require.NoError(t, err)
	df := string(raw)
	require.Contains(t, df, "CGO_ENABLED=0", "a static binary")
	require.Regexp(t, `(?m)^FROM (gcr\.io/distroless/static\S*|scratch)\s*$`, df, "a minimal final stage")
	require.Regexp(t, `(?m)^USER (65532|nonroot)`, df)
	require.Regexp(t, `(?m)^FROM golang:\S+ AS build`, df, "multi-stage")
}

// The web configuration Secret holds a web config and roles whose users
// all have a basic-auth entry.
func TestWebSecret(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "kubernetes", "proxy-secure.yaml"))
	require.NoError(t, err)
	var web *corev1.Secret
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		require.NoError(t, err)
		var s corev1.Secret
		if json.Unmarshal(js, &s) == nil && s.Kind == "Secret" && s.Name == "fodc-proxy-web" {
			web = &s
		}
	}
	require.NotNil(t, web)
	var cfg struct {
		TLSServerConfig map[string]string `json:"tls_server_config"`
		BasicAuthUsers  map[string]string `json:"basic_auth_users"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(web.StringData["web-config.yml"]), &cfg))
	require.NotEmpty(t, cfg.TLSServerConfig["cert_file"])
	var roles struct {
		Users map[string]string `json:"users"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(web.StringData["roles.yml"]), &roles))
	require.NotEmpty(t, roles.Users)
	for user, role := range roles.Users {
		require.Contains(t, cfg.BasicAuthUsers, user)
		require.Contains(t, []string{"viewer", "operator"}, role)
	}
}
