package lxc

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
)

// An entrypoint reaches the container's PID 1 through three readers, none
// of which knows backslash escapes:
//
//  1. PVE's config parser keeps "entrypoint: VALUE" with blanks trimmed at
//     both ends, and writes it to LXC's config as "lxc.init.cmd = VALUE".
//  2. LXC's config parser (confile.c parse_line) trims blanks again and,
//     when VALUE starts with a quote and ends with the same quote, drops
//     that one pair: "'/opt/my app/run' --name 'a b'" loses its outer
//     quotes and splits into /opt/my, app/run', --name.
//  3. lxc_string_split_quoted (string_utils.c) splits at C isspace. A word
//     that starts with ' or " runs to the next same quote, which ends it
//     (a following character starts a new word); any other word runs to
//     the next blank, quotes in it being literal. A word left open at the
//     end is dropped.
//
// So one argument can be written bare (not empty, no blank, not starting
// with a quote), in single quotes (no ' in it) or in double quotes (no "
// in it); and a line that starts and ends with the same quote is wrapped
// in one more pair for step 2 to remove. An argument with a blank and
// both quote kinds, or starting with a quote and holding both, has no
// spelling at all.

// CommandError is an argument no lxc.init.cmd line can carry.
type CommandError struct {
	Index int
	Msg   string
}

func (e *CommandError) Error() string { return fmt.Sprintf("argument %d %s", e.Index, e.Msg) }

// cSpace is C's isspace in the C locale, what lxc_string_split_quoted
// splits at.
func cSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// readable lists bytes that make a shell reader think twice: arguments
// holding them are quoted although LXC would take them bare.
const readable = " \t'\"\\$`|&;<>(){}*?[]#~"

func quoteArg(i int, a string) (string, error) {
	for _, r := range a {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return "", &CommandError{i, "contains control characters other than tab, which PVE refuses in an entrypoint"}
		}
	}
	// A Unicode blank is no split point for LXC, but a trimmer (PVE's
	// Perl, nexcage's own parser) may eat it at the end of the line.
	bareOK := a != "" && a[0] != '\'' && a[0] != '"' && !edgeSpace(a)
	for j := 0; bareOK && j < len(a); j++ {
		bareOK = !cSpace(a[j])
	}
	switch {
	case bareOK && !strings.ContainsAny(a, readable):
		return a, nil
	case !strings.Contains(a, "'"):
		return "'" + a + "'", nil
	case !strings.Contains(a, `"`):
		return `"` + a + `"`, nil
	case bareOK:
		return a, nil
	}
	return "", &CommandError{i, "contains both kinds of quotes and a blank (or starts with a quote), which no LXC init command can carry: LXC's splitter knows no escapes"}
}

func edgeSpace(a string) bool {
	return strings.TrimFunc(a, unicode.IsSpace) != a
}

// JoinCommand renders argv as an entrypoint line that PVE and LXC split
// back into exactly argv, or says which argument no line can carry.
func JoinCommand(args []string) (string, error) {
	parts := make([]string, len(args))
	for i, a := range args {
		q, err := quoteArg(i, a)
		if err != nil {
			return "", err
		}
		parts[i] = q
	}
	line := strings.Join(parts, " ")
	if n := len(line); n > 1 && (line[0] == '\'' || line[0] == '"') && line[n-1] == line[0] {
		line = line[:1] + line + line[:1]
	}
	return line, nil
}

// InitCommand is JoinCommand, except that the script of a shell's -c that
// no line can carry (a shell-form CMD such as `echo "it's up" && run`) is
// rewritten into one that does the same: eval of the script in double
// quotes, each ' produced by printf. rewritten says whether that was done.
func InitCommand(args []string) (line string, rewritten bool, err error) {
	line, err = JoinCommand(args)
	ce, ok := err.(*CommandError)
	if !ok || ce.Index != shellScriptIndex(args) {
		return line, false, err
	}
	out := append([]string(nil), args...)
	out[ce.Index] = evalScript(args[ce.Index])
	line, err = JoinCommand(out)
	return line, err == nil, err
}

// shellScriptIndex is where args hold the script of `SHELL -c SCRIPT`,
// or -1.
func shellScriptIndex(args []string) int {
	if len(args) < 3 {
		return -1
	}
	switch path.Base(args[0]) {
	case "sh", "bash", "ash", "dash", "ksh", "mksh", "zsh":
	default:
		return -1
	}
	f := args[1]
	if len(f) < 2 || f[0] != '-' || !strings.Contains(f, "c") {
		return -1
	}
	for _, r := range f[1:] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return -1
		}
	}
	return 2
}

// evalScript is a script without single quotes that runs script: inside
// double quotes only \ $ ` and " need a backslash, and a ' comes from
// $(printf \\047), which the inner shell reads as printf '\047'.
func evalScript(script string) string {
	var b strings.Builder
	b.WriteString(`eval "`)
	for i := 0; i < len(script); i++ {
		switch c := script[i]; c {
		case '\\', '$', '`', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\'':
			b.WriteString(`$(printf \\047)`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// SplitCommand is what PVE and LXC make of an entrypoint line: JoinCommand's
// inverse, and the argv a container's PID 1 gets. It works on bytes: quotes
// and blanks are ASCII, and arguments need not be valid UTF-8.
func SplitCommand(s string) []string {
	// PVE trims the value (Perl's \s); LXC trims blanks again.
	s = strings.Trim(s, " \t\n\r\f\v")
	if n := len(s); n > 1 && (s[0] == '\'' || s[0] == '"') && s[n-1] == s[0] {
		s = s[1 : n-1]
	}
	return SplitWords(s)
}

// SplitWords is lxc_string_split_quoted alone: a command line as a person
// writes it, without the outer-quote stripping of LXC's config parser.
// Like LXC, it drops a word whose quote is never closed.
func SplitWords(s string) []string {
	out, _ := splitWords(s)
	return out
}

// ErrUnclosedQuote is a command line with a quote that is never closed:
// LXC would silently drop the rest of the line.
var ErrUnclosedQuote = errors.New("a quote is never closed")

// SplitWordsStrict splits a command line a person typed (a flag's value)
// as SplitWords does, but refuses one that LXC would cut short.
func SplitWordsStrict(s string) ([]string, error) {
	out, unclosed := splitWords(s)
	if unclosed {
		return nil, ErrUnclosedQuote
	}
	return out, nil
}

func splitWords(s string) (_ []string, unclosed bool) {
	out := []string{}
	state := byte(' ')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch state {
		case ' ':
			if cSpace(c) {
				continue
			}
			start = i
			if c == '\'' || c == '"' {
				state = c
			} else {
				state = 'a'
			}
		case 'a':
			if cSpace(c) {
				out = append(out, s[start:i])
				state = ' '
			}
		default:
			if c == state {
				out = append(out, s[start+1:i])
				state = ' '
			}
		}
	}
	if state == 'a' {
		out = append(out, s[start:])
	}
	unclosed = state == '\'' || state == '"'
	if len(out) == 0 {
		return nil, unclosed
	}
	return out, unclosed
}
