// Package tlsutil builds the TLS configurations of the proxy's agent-facing
// listener and of the agent's connection to the proxy. Certificate, key and
// CA files are read again whenever they change on disk, so that rotated
// certificates are used for the next handshake without a restart.
package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// file caches the content of one file, read again when its size,
// modification time or inode changes (a rename over it, as Kubernetes
// secret volumes and cert-manager do, changes the inode).
type file struct {
	path string
	info os.FileInfo
	data []byte
}

// read returns the file's content and whether it changed since the last
// read.
func (f *file) read() ([]byte, bool, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, false, err
	}
	if f.info != nil && os.SameFile(f.info, fi) && fi.ModTime().Equal(f.info.ModTime()) && fi.Size() == f.info.Size() {
		return f.data, false, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, false, err
	}
	changed := !bytes.Equal(data, f.data)
	f.info, f.data = fi, data
	return data, changed, nil
}

// Files are the PEM files of one side of a TLS connection. Empty fields
// are not used.
type Files struct {
	CertFile string // certificate chain presented to the peer
	KeyFile  string // its private key
	CAFile   string // CAs that verify the peer's certificate
}

// Reloader serves the certificate and CA pool of Files, checking the files
// for changes at every handshake. It is safe for concurrent use.
type Reloader struct {
	mu   sync.Mutex
	cert file
	key  file
	ca   file

	pair *tls.Certificate
	pool *x509.CertPool
}

// NewReloader reads the files once, so that a wrong path or a bad file
// stops the program at start-up with an error naming the file.
func NewReloader(f Files) (*Reloader, error) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("a certificate file and a key file go together")
	}
	r := &Reloader{cert: file{path: f.CertFile}, key: file{path: f.KeyFile}, ca: file{path: f.CAFile}}
	if f.CertFile != "" {
		if _, err := r.Certificate(); err != nil {
			return nil, err
		}
	}
	if f.CAFile != "" {
		if _, err := r.Pool(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Certificate returns the current key pair; after a failed reload (say, a
// certificate written before its key) the previous pair stays in use.
func (r *Reloader) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert.path == "" {
		return nil, errors.New("no certificate configured")
	}
	c, cch, cerr := r.cert.read()
	k, kch, kerr := r.key.read()
	if err := errors.Join(cerr, kerr); err != nil {
		if r.pair != nil {
			return r.pair, nil
		}
		return nil, err
	}
	if r.pair != nil && !cch && !kch {
		return r.pair, nil
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		if r.pair != nil {
			return r.pair, nil
		}
		return nil, fmt.Errorf("load key pair %s, %s: %w", r.cert.path, r.key.path, err)
	}
	r.pair = &pair
	return r.pair, nil
}

// Pool returns the current CA pool.
func (r *Reloader) Pool() (*x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ca.path == "" {
		return nil, errors.New("no CA file configured")
	}
	data, changed, err := r.ca.read()
	if err != nil {
		if r.pool != nil {
			return r.pool, nil
		}
		return nil, err
	}
	if r.pool != nil && !changed {
		return r.pool, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		if r.pool != nil {
			return r.pool, nil
		}
		return nil, fmt.Errorf("%s holds no PEM certificate", r.ca.path)
	}
	r.pool = pool
	return r.pool, nil
}

// ServerConfig returns a server configuration that presents the current
// certificate and, with a CA file, verifies client certificates against
// the current pool: clientAuth says whether one is required
// (tls.RequireAndVerifyClientCert) or only checked when given
// (tls.VerifyClientCertIfGiven).
func (r *Reloader) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pair, err := r.Certificate()
		if err != nil {
			return nil, err
		}
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2"},
			Certificates: []tls.Certificate{*pair},
		}
		if r.ca.path != "" {
			pool, err := r.Pool()
			if err != nil {
				return nil, err
			}
			c.ClientCAs = pool
			c.ClientAuth = clientAuth
		}
		return c, nil
	}
	return base
}

// ClientConfig returns a client configuration that verifies the server
// against the current CA pool (the system pool without a CA file) under
// serverName (the dialled host when empty) and presents the current client
// certificate when one is configured.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if r.cert.path != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.Certificate()
		}
	}
	if r.ca.path != "" {
		// Verification against a pool that may change: the standard
		// verification is switched off and done here with the current
		// pool, under the same name rules.
		c.InsecureSkipVerify = true //nolint:gosec // verified in VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			pool, err := r.Pool()
			if err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				DNSName:       cs.ServerName,
				Roots:         pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			return err
		}
	}
	return c
}
