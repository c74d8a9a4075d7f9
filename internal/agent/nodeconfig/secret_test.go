package nodeconfig

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIsSecret(t *testing.T) {
	tests := []struct {
		name   string
		secret bool
	}{
		{"etcd-password", true},
		{"etcd_passwd", true},
		{"db.pwd", true},
		{"pass", true},
		{"auth-token", true},
		{"client-secret", true},
		{"tls-key-file", true},
		{"etcd-tls-key-file", true},
		{"key-file", true},
		{"apikey", true},
		{"api-keys", true},
		{"credentials", true},
		{"aws.credential.file", true},
		{"auth", true},
		{"auth-config-file", true},
		{"private-key", true},
		{"etcdPassword", true},
		{"APIKey", true},
		{"apiKey", true},
		{"TLSKeyFile", true},
		{"tls2Key", true},
		{"BYDB_ETCD_PASSWORD", true},
		{"BYDB_AUTH_TOKEN", true},
		{"etcdpassword", true},
		{"BYDB_APITOKEN", true},
		{"--etcd-password", true},

		{"keepalive", false},
		{"keep-alive", false},
		{"grpc-keepalive-time", false},
		{"passthrough", false},
		{"compass", false},
		{"monkey", false},
		{"keyspace", false},
		{"author", false},
		{"etcd-endpoints", false},
		{"etcd-username", false},
		{"tls-cert-file", false},
		{"grpc-port", false},
		{"BYDB_GRPC_HOST", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.secret, IsSecret(tc.name))
		})
	}
}

func TestNameWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"etcd-tls-key-file", []string{"etcd", "tls", "key", "file"}},
		{"BYDB_ETCD_PASSWORD", []string{"BYDB", "ETCD", "PASSWORD"}},
		{"TLSKeyFile", []string{"TLS", "Key", "File"}},
		{"etcdPassword2X", []string{"etcd", "Password2", "X"}},
		{"a..b", []string{"a", "b"}},
		{"--", nil},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, nameWords(tc.in))
		})
	}
}

func TestRedact(t *testing.T) {
	in := map[string][]string{
		"etcd-password":  {"s3cr3t"},
		"repeat-token":   {"t1", "t2"},
		"etcd-endpoints": {"http://root:pw1@etcd-0:2379,https://u:pw2@etcd-1:2379"},
		"grpc-port":      {"17912"},
		"node-labels":    {"type=hot,api-key=k3y,zone=a"},
	}
	got := Redact(in)
	require.Equal(t, map[string][]string{
		"etcd-password":  {Redacted},
		"repeat-token":   {Redacted, Redacted},
		"etcd-endpoints": {"http://<redacted>@etcd-0:2379,https://<redacted>@etcd-1:2379"},
		"grpc-port":      {"17912"},
		"node-labels":    {"type=hot,api-key=<redacted>,zone=a"},
	}, got)
	require.Equal(t, []string{"s3cr3t"}, in["etcd-password"], "the input must not change")
	require.Nil(t, Redact(nil))
}

func TestRedactEnv(t *testing.T) {
	got := RedactEnv(map[string]string{
		"BYDB_ETCD_PASSWORD":  "s3cr3t",
		"BYDB_ETCD_ENDPOINTS": "http://user:pw@etcd:2379",
		"BYDB_GRPC_PORT":      "17912",
	})
	require.Equal(t, map[string]string{
		"BYDB_ETCD_PASSWORD":  Redacted,
		"BYDB_ETCD_ENDPOINTS": "http://<redacted>@etcd:2379",
		"BYDB_GRPC_PORT":      "17912",
	}, got)
	require.Nil(t, RedactEnv(nil))
}

func TestRedactValue(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"plain", "plain"},
		{"/data/pod-0", "/data/pod-0"},
		{"http://etcd:2379", "http://etcd:2379"},
		{"http://user:pw@etcd:2379/x", "http://<redacted>@etcd:2379/x"},
		{"etcd://tokenonly@etcd", "etcd://<redacted>@etcd"},
		{"http://h/a@b", "http://h/a@b"},
		{"http://h?token=abc&x=1", "http://h?token=<redacted>&x=1"},
		{"http://h?x=1&password=abc", "http://h?x=1&password=<redacted>"},
		{"password=abc", "password=<redacted>"},
		{"a=1;secret=2", "a=1;secret=<redacted>"},
		{"type=hot,zone=a", "type=hot,zone=a"},
		{"keepalive=10s", "keepalive=10s"},
		{`Get "http://u:pw@node:6060/debug/pprof/cmdline": dial tcp: refused`, `Get "http://<redacted>@node:6060/debug/pprof/cmdline": dial tcp: refused`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := RedactValue(tc.in)
			require.Equal(t, tc.want, got)
			require.Equal(t, got, RedactValue(got), "redaction is idempotent")
		})
	}
}
