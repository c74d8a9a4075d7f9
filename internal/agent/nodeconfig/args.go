package nodeconfig

import (
	"bytes"
	"fmt"
	"strings"
)

// ParseArgs reads a command line into flag name -> values and the positional
// (non-flag) arguments. args excludes the program name (argv[0]); the caller
// drops it. Collect does so when the first element of the node's argv is not
// a flag (see SplitProgram).
//
// The rules, without the node's flag definitions:
//   - A flag is a token that starts with "-" and is neither "-", "--", a
//     negative number or duration such as "-1", "-0.5" or "-5m", nor made only of dashes or
//     with an empty name ("--=v"); those are positional arguments. The name
//     is stored without its leading dashes, so "-k", "--k" and "---k" are
//     all "k". A single-dash group such as "-abc" is the one flag "abc".
//   - "--k=v" and "-k=v" carry their value; the value may be empty and may
//     itself contain "=".
//   - "--k v" and "-k v": a flag without "=" takes the next token as its
//     value when that token is not a flag and not "--" (this is the
//     heuristic that reads "--bool positional" as bool=positional). At the
//     end of the line, or before another flag or "--", the flag is the
//     boolean "true".
//   - A repeated flag keeps every value, in command-line order.
//   - "--" ends the flags: every later token is positional.
//
// params is never nil; positional is nil when there are none.
func ParseArgs(args []string) (params map[string][]string, positional []string) {
	params = make(map[string][]string)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		name, value, hasValue, ok := splitFlag(a)
		if !ok {
			positional = append(positional, a)
			continue
		}
		if !hasValue {
			if i+1 < len(args) && args[i+1] != "--" && !isFlag(args[i+1]) {
				value = args[i+1]
				i++
			} else {
				value = "true"
			}
		}
		params[name] = append(params[name], value)
	}
	return params, positional
}

// SplitProgram separates the program name from the arguments of a full argv
// as read from /proc/<pid>/cmdline or /debug/pprof/cmdline: the first
// element is the program unless it is a flag (an argv without its program,
// as a hand-written override may be).
func SplitProgram(argv []string) (program string, args []string) {
	if len(argv) == 0 || isFlag(argv[0]) {
		return "", argv
	}
	return argv[0], argv[1:]
}

// isFlag reports whether ParseArgs reads a as a flag.
func isFlag(a string) bool {
	_, _, _, ok := splitFlag(a)
	return ok
}

// splitFlag splits a flag token into its name and, when it has "=", its
// value. ok is false for tokens that are not flags (see ParseArgs).
func splitFlag(a string) (name, value string, hasValue, ok bool) {
	if len(a) < 2 || a[0] != '-' || a == "--" || isNumber(a) {
		return "", "", false, false
	}
	body := strings.TrimLeft(a, "-")
	name, value, hasValue = strings.Cut(body, "=")
	if name == "" {
		return "", "", false, false
	}
	return name, value, hasValue, true
}

// isNumber reports whether s starts like a negative number or duration,
// such as "-1", "-0.5", "-.5" or "-5m": a value, not a flag. Flag names do
// not start with a digit.
func isNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	if isDigit(s[1]) {
		return true
	}
	return s[1] == '.' && len(s) > 2 && isDigit(s[2])
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// SplitCmdline splits a command line in the format of /proc/<pid>/cmdline
// and of net/http/pprof's /debug/pprof/cmdline: arguments separated by NUL.
// /proc ends the last argument with a NUL and pprof does not
// (strings.Join(os.Args, "\x00")); a trailing newline, which tools that save
// the page may add, is dropped too. Empty arguments inside the line are kept
// because a program can be given them. An empty input gives nil.
func SplitCmdline(b []byte) []string {
	b = bytes.TrimRight(b, "\n")
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// SyntaxError is an error in a shell-like command line given to SplitShell.
// It does not quote the input, which may hold secrets.
type SyntaxError struct {
	// Offset is the byte offset of the problem in the input.
	Offset int
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("command line syntax: %s at byte %d", e.Reason, e.Offset)
}

// SplitShell splits a one-line, shell-like command into words, the way a
// POSIX shell does without expansions: blanks (space, tab, newline, carriage
// return) separate words; single quotes keep everything literally; double
// quotes keep everything except that a backslash escapes ", \, $ and ` (and
// removes a newline); outside quotes a backslash keeps the next byte
// literally and a backslash-newline is removed. Quotes may be adjacent to
// other text ("--k='a b'" is one word) and a pair of quotes with nothing
// inside is an empty word. Variables, globs and other shell syntax are not
// interpreted. An unterminated quote or a trailing backslash is a
// *SyntaxError.
func SplitShell(s string) ([]string, error) {
	const (
		unquoted = iota
		single
		double
	)
	var (
		args       []string
		cur        strings.Builder
		inWord     bool
		state      = unquoted
		quoteStart int
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch state {
		case single:
			if c == '\'' {
				state = unquoted
			} else {
				cur.WriteByte(c)
			}
		case double:
			switch {
			case c == '"':
				state = unquoted
			case c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
				cur.WriteByte(s[i+1])
				i++
			case c == '\\' && i+1 < len(s) && s[i+1] == '\n':
				i++
			default:
				cur.WriteByte(c)
			}
		default:
			switch c {
			case ' ', '\t', '\n', '\r':
				if inWord {
					args = append(args, cur.String())
					cur.Reset()
					inWord = false
				}
			case '\'':
				state, quoteStart, inWord = single, i, true
			case '"':
				state, quoteStart, inWord = double, i, true
			case '\\':
				if i+1 >= len(s) {
					return nil, &SyntaxError{Offset: i, Reason: "trailing backslash"}
				}
				i++
				if s[i] != '\n' {
					cur.WriteByte(s[i])
					inWord = true
				}
			default:
				cur.WriteByte(c)
				inWord = true
			}
		}
	}
	switch state {
	case single:
		return nil, &SyntaxError{Offset: quoteStart, Reason: "unterminated single quote"}
	case double:
		return nil, &SyntaxError{Offset: quoteStart, Reason: "unterminated double quote"}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}
