package nodeconfig

import (
	"regexp"
	"strings"
	"unicode"
)

// Redacted replaces the value of a secret parameter.
const Redacted = "<redacted>"

// secretWords are the name tokens that make a parameter secret. Plurals are
// included so that "--api-keys" is caught too.
var secretWords = map[string]bool{
	"password": true, "passwords": true, "passwd": true, "pwd": true, "pass": true,
	"token": true, "tokens": true,
	"secret": true, "secrets": true,
	"key": true, "keys": true, "apikey": true,
	"credential": true, "credentials": true,
	"auth":    true,
	"private": true,
}

// secretParts are substrings that make a name secret even when it is not
// split into words ("etcdpassword", "BYDB_APITOKEN"). Short words such as
// "key" or "pass" are left out on purpose: as substrings they would catch
// "keepalive" or "passthrough".
var secretParts = []string{"password", "passwd", "secret", "token", "credential", "apikey", "privatekey"}

// IsSecret reports whether a parameter or environment variable name suggests
// a secret. The name is split into words at every character that is not a
// letter or digit (such as "-", "_", ".") and at camelCase boundaries
// ("etcdPassword" -> etcd, password; "TLSKeyFile" -> tls, key, file). The
// name is secret when, ignoring case, any word is one of password,
// passwords, passwd, pwd, pass, token, tokens, secret, secrets, key, keys,
// apikey, credential, credentials, auth or private, or when the whole name
// contains password, passwd, secret, token, credential, apikey or
// privatekey.
//
// The rule errs on the side of hiding: "tls-key-file" (a path) and
// "auth-enabled" are redacted too, while "keepalive" is not.
func IsSecret(name string) bool {
	lower := strings.ToLower(name)
	for _, p := range secretParts {
		if strings.Contains(lower, p) {
			return true
		}
	}
	for _, w := range nameWords(name) {
		if secretWords[strings.ToLower(w)] {
			return true
		}
	}
	return false
}

// nameWords splits name into words as IsSecret describes.
func nameWords(name string) []string {
	var words []string
	rs := []rune(name)
	start := -1
	flush := func(end int) {
		if start >= 0 && end > start {
			words = append(words, string(rs[start:end]))
		}
		start = -1
	}
	for i, r := range rs {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			flush(i)
			continue
		}
		if start < 0 {
			start = i
			continue
		}
		if unicode.IsUpper(r) {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			// fooBar, foo2Bar, and the end of an acronym: TLSKey -> TLS Key.
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				flush(i)
				start = i
			}
		}
	}
	flush(len(rs))
	return words
}

// Redact returns a copy of params in which every value of a secret
// parameter (IsSecret) is Redacted, one per original value, and every other
// value has passed through RedactValue. params itself is not changed. A nil
// map gives nil.
func Redact(params map[string][]string) map[string][]string {
	if params == nil {
		return nil
	}
	out := make(map[string][]string, len(params))
	for name, values := range params {
		vs := make([]string, len(values))
		for i, v := range values {
			if IsSecret(name) {
				vs[i] = Redacted
			} else {
				vs[i] = RedactValue(v)
			}
		}
		out[name] = vs
	}
	return out
}

// RedactEnv is Redact for environment variables: the value of a variable
// whose name is secret is Redacted, every other value passes through
// RedactValue. env itself is not changed. A nil map gives nil.
func RedactEnv(env map[string]string) map[string]string {
	if env == nil {
		return nil
	}
	out := make(map[string]string, len(env))
	for name, v := range env {
		if IsSecret(name) {
			out[name] = Redacted
		} else {
			out[name] = RedactValue(v)
		}
	}
	return out
}

var (
	// urlUserinfo matches the userinfo of a URL: scheme://userinfo@. It
	// stops at characters that cannot be in a host, so "http://h/a@b" is
	// left alone.
	urlUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s,]+@`)
	// keyValue matches name=value pairs inside a value: query parameters
	// and comma- or semicolon-separated lists.
	keyValue = regexp.MustCompile(`(^|[?&,;\s])([A-Za-z0-9_.\-]+)=([^&,;\s]*)`)
)

// RedactValue hides secrets embedded in a value whose own name is not
// secret: the userinfo of URLs ("http://user:pw@etcd:2379" becomes
// "http://<redacted>@etcd:2379", in lists too) and the values of secret-named
// key=value pairs ("a=1,token=x" becomes "a=1,token=<redacted>", the same
// for URL query parameters). Collect also passes its error texts through it.
func RedactValue(v string) string {
	if strings.Contains(v, "://") {
		v = urlUserinfo.ReplaceAllString(v, "${1}"+Redacted+"@")
	}
	if strings.Contains(v, "=") {
		v = keyValue.ReplaceAllStringFunc(v, func(m string) string {
			sub := keyValue.FindStringSubmatch(m)
			if !IsSecret(sub[2]) || sub[3] == Redacted {
				return m
			}
			return sub[1] + sub[2] + "=" + Redacted
		})
	}
	return v
}
