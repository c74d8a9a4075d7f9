package series

import "strings"

// Character classes of metric and label names.
const (
	nameStart uint8 = 1 << iota // [a-zA-Z_]
	nameDigit                   // [0-9]
	nameColon                   // :
)

var nameChars = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = nameStart
		t[c-'a'+'A'] = nameStart
	}
	t['_'] = nameStart
	for c := '0'; c <= '9'; c++ {
		t[c] = nameDigit
	}
	t[':'] = nameColon
	return t
}()

// ValidMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func ValidMetricName(s string) bool {
	if s == "" || nameChars[s[0]]&(nameStart|nameColon) == 0 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if nameChars[s[i]] == 0 {
			return false
		}
	}
	return true
}

// ValidLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]* and does
// not start with the reserved "__".
func ValidLabelName(s string) bool {
	if s == "" || nameChars[s[0]]&nameStart == 0 || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 1; i < len(s); i++ {
		if nameChars[s[i]]&(nameStart|nameDigit) == 0 {
			return false
		}
	}
	return true
}
