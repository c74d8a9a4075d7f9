package nodeconfig

import "strings"

// RedactArgv returns a copy of a command line's words in which the value of
// every secret flag (IsSecret of its name) is Redacted and every other word
// has passed through RedactValue. A secret flag's value is found the way
// ParseArgs finds it: after "=" in the same word, or else the next word when
// that is neither a flag nor "--". Words after "--" are positional and only
// pass through RedactValue. argv itself is not changed.
func RedactArgv(argv []string) []string {
	out := make([]string, len(argv))
	flags := true
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if flags && a == "--" {
			flags = false
			out[i] = a
			continue
		}
		name, _, hasValue, ok := splitFlag(a)
		if !flags || !ok || !IsSecret(name) {
			out[i] = RedactValue(a)
			continue
		}
		if hasValue {
			eq := strings.IndexByte(a, '=')
			out[i] = a[:eq+1] + Redacted
			continue
		}
		out[i] = a
		if i+1 < len(argv) && argv[i+1] != "--" && !isFlag(argv[i+1]) {
			i++
			out[i] = Redacted
		}
	}
	return out
}

// QuoteShell joins words into one line that SplitShell splits back into the
// same words: a word made only of characters that a shell leaves alone is
// written as is, any other word in single quotes, where an embedded single
// quote closes the quotes, follows as a backslash-escaped quote and reopens
// them.
func QuoteShell(words []string) string {
	var b strings.Builder
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		if w != "" && strings.Trim(w, safeShellChars) == "" {
			b.WriteString(w)
			continue
		}
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(w, "'", `'\''`))
		b.WriteByte('\'')
	}
	return b.String()
}

// safeShellChars are the characters that need no quoting in a word.
const safeShellChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + "-_=+.,:/@%"
