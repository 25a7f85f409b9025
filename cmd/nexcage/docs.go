package main

import (
	"bytes"
	"cmp"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/rootfs"
)

// The command reference (docs/commands/*.md) and the man pages
// (docs/man/*.1) are generated from the command table, the same source
// `nexcage --help` and `nexcage CMD --help` print from. TestGeneratedDocs
// keeps the committed files current; `make docs` rewrites them.

// docFiles returns every generated file by its path from the repository
// root. The output depends on nothing but the command table: no date, no
// version, no host.
func docFiles() (map[string][]byte, error) {
	top, err := parseTopHelp()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"docs/commands/nexcage.md": markdownIndex(top),
		"docs/man/nexcage.1":       manIndex(top),
	}
	for _, c := range visibleCommands() {
		files["docs/commands/nexcage-"+c.name+".md"] = markdownCommand(top, c)
		files["docs/man/nexcage-"+c.name+".1"] = manCommand(top, c)
	}
	return files, nil
}

// topHelp is what the docs take from `nexcage --help`, so both say the same.
type topHelp struct {
	tagline  string // "nexcage turns ... templates."
	synopsis string // "nexcage <command> [flags] [args]"
	exits    []exitStatus
}

type exitStatus struct {
	code    int
	meaning string
	only    string // the one command it applies to, "" for all
}

var exitRE = regexp.MustCompile(`^(\d+) (.+?)(?: \((\w+)\))?$`)

func parseTopHelp() (topHelp, error) {
	var b bytes.Buffer
	printTopHelp(&b)
	var h topHelp
	for i, l := range strings.Split(b.String(), "\n") {
		switch {
		case i == 0:
			h.tagline = l
		case strings.HasPrefix(l, "usage: "):
			h.synopsis = strings.TrimPrefix(l, "usage: ")
		case strings.HasPrefix(l, "Exit status: "):
			for _, part := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "Exit status: "), "."), ", ") {
				m := exitRE.FindStringSubmatch(part)
				if m == nil {
					return h, fmt.Errorf("nexcage --help: exit status %q is not \"N meaning [(command)]\"", part)
				}
				code, _ := strconv.Atoi(m[1])
				h.exits = append(h.exits, exitStatus{code, m[2], m[3]})
			}
		}
	}
	if !strings.HasPrefix(h.tagline, "nexcage ") || h.synopsis == "" || len(h.exits) == 0 {
		return h, fmt.Errorf("nexcage --help no longer has the tagline, usage and exit status lines the docs are made from")
	}
	return h, nil
}

// exitsOf are the statuses command c (nil: nexcage as a whole) can end with.
func (h topHelp) exitsOf(c *command) []exitStatus {
	var out []exitStatus
	for _, e := range h.exits {
		if c == nil || e.only == "" || e.only == c.name {
			if c == nil && e.only != "" {
				e.meaning += " (" + e.only + ")"
			}
			out = append(out, e)
		}
	}
	return out
}

// interruptedMeaning is run's 128+N status (see main.go).
const interruptedMeaning = "interrupted by signal N (130 for SIGINT, 143 for SIGTERM); nothing was left half-written"

// docFlags are a command's flags as --help lists them.
func docFlags(c *command) []*pflag.Flag {
	fs := newFlagSet(c, &opts{})
	var out []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			out = append(out, f)
		}
	})
	return out
}

// docText makes a help text independent of the machine generating the
// docs: --platform's default names the host's platform.
func docText(s string) string {
	return strings.ReplaceAll(s, ", "+rootfs.HostPlatform().String()+")", ", e.g. linux/amd64)")
}

func flagType(f *pflag.Flag) string {
	switch t := f.Value.Type(); t {
	case "stringArray":
		return "string, repeatable"
	default:
		return t
	}
}

// flagDefault is "" when the flag has no default worth printing.
func flagDefault(f *pflag.Flag) string {
	switch {
	// The zero values pflag leaves out of --help too.
	case f.DefValue == "", f.DefValue == "[]", f.Value.Type() == "bool" && f.DefValue == "false",
		strings.HasPrefix(f.Value.Type(), "int") && f.DefValue == "0":
		return ""
	}
	return f.DefValue
}

// A help text is paragraphs; an indented paragraph is either a term with
// its more indented body (generate's forms, completion's shells) or
// preformatted lines.
type helpBlock struct {
	kind  blockKind
	term  string
	lines []string
}

type blockKind int

const (
	paraBlock blockKind = iota
	termBlock
	preBlock
)

func indentOf(s string) int { return len(s) - len(strings.TrimLeft(s, " \t")) }

func helpBlocks(help string) []helpBlock {
	var out []helpBlock
	for _, p := range strings.Split(strings.Trim(help, "\n"), "\n\n") {
		lines := strings.Split(strings.TrimRight(p, "\n"), "\n")
		if strings.TrimSpace(p) == "" {
			continue
		}
		first := indentOf(lines[0])
		if first == 0 {
			out = append(out, helpBlock{kind: paraBlock, lines: lines})
			continue
		}
		body := lines[1:]
		isTerm := len(body) > 0
		for _, l := range body {
			if indentOf(l) <= first {
				isTerm = false
			}
		}
		if isTerm {
			b := helpBlock{kind: termBlock, term: strings.TrimSpace(lines[0])}
			for _, l := range body {
				b.lines = append(b.lines, strings.TrimSpace(l))
			}
			out = append(out, b)
			continue
		}
		b := helpBlock{kind: preBlock}
		for _, l := range lines {
			b.lines = append(b.lines, strings.TrimRight(l[min(first, indentOf(l)):], " "))
		}
		out = append(out, b)
	}
	return out
}

// sentence makes a summary ("print the nexcage version") a sentence.
func sentence(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:] + "."
}

// description is the text of a command's DESCRIPTION section: its help,
// or for a command with none its summary as a sentence.
func description(c *command) string {
	return cmp.Or(c.help, sentence(c.summary))
}

const generatedNote = "Generated from the command table (`make docs`); do not edit."

// Markdown.

var mdLineStart = regexp.MustCompile(`^(\s*)([#>+-]|\d+[.)])(\s|$)`)

// mdEscape makes text literal in Markdown: backslash escapes are valid
// before any ASCII punctuation.
func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_[]<>~|", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return mdLineStart.ReplaceAllString(b.String(), `$1\$2$3`)
}

func mdLines(lines []string) string {
	for i := range lines {
		lines[i] = mdEscape(strings.TrimSpace(lines[i]))
	}
	return strings.Join(lines, "\n")
}

func markdownHelp(b *bytes.Buffer, help string) {
	for _, blk := range helpBlocks(docText(help)) {
		switch blk.kind {
		case paraBlock:
			fmt.Fprintf(b, "%s\n\n", mdLines(blk.lines))
		case termBlock:
			fmt.Fprintf(b, "- `%s`\n\n", blk.term)
			for _, l := range strings.Split(mdLines(blk.lines), "\n") {
				fmt.Fprintf(b, "  %s\n", l)
			}
			b.WriteString("\n")
		case preBlock:
			fmt.Fprintf(b, "```\n%s\n```\n\n", strings.Join(blk.lines, "\n"))
		}
	}
}

func markdownIndex(h topHelp) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# nexcage\n\n%s\n\n", mdEscape(h.tagline))
	fmt.Fprintf(&b, "## Usage\n\n```\n%s\nnexcage <command> --help\nnexcage --version\n```\n\n", h.synopsis)
	b.WriteString("## Commands\n\n| Command | Description |\n| --- | --- |\n")
	for _, c := range visibleCommands() {
		fmt.Fprintf(&b, "| [%s](nexcage-%s.md) | %s |\n", c.name, c.name, mdEscape(c.summary))
	}
	b.WriteString("\nEvery command takes `--json` (one JSON result object on stdout) and `-q`, `--quiet` (no progress on stderr); `nexcage <command> --help` lists its flags.\n\n")
	markdownExits(&b, h.exitsOf(nil))
	fmt.Fprintf(&b, "## See also\n\nThe man pages in [../man](../man): `man -l docs/man/nexcage.1`.\n\n%s\n", generatedNote)
	return b.Bytes()
}

func markdownExits(b *bytes.Buffer, exits []exitStatus) {
	b.WriteString("## Exit status\n\n| Status | Meaning |\n| --- | --- |\n")
	for _, e := range exits {
		fmt.Fprintf(b, "| %d | %s |\n", e.code, mdEscape(e.meaning))
	}
	fmt.Fprintf(b, "| 128+N | %s |\n\n", mdEscape(interruptedMeaning))
}

func markdownCommand(h topHelp, c *command) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# nexcage %s\n\n%s\n\n", c.name, mdEscape(c.summary))
	fmt.Fprintf(&b, "## Usage\n\n```\n%s\n```\n\n", usageLine(c))
	b.WriteString("## Description\n\n")
	markdownHelp(&b, description(c))
	b.WriteString("## Flags\n\n| Flag | Type | Default | Description |\n| --- | --- | --- | --- |\n")
	for _, f := range docFlags(c) {
		name := "--" + f.Name
		if f.Shorthand != "" {
			name = "-" + f.Shorthand + ", " + name
		}
		def := ""
		if d := flagDefault(f); d != "" {
			def = "`" + d + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", name, flagType(f), def, mdEscape(docText(f.Usage)))
	}
	b.WriteString("| `-h, --help` | | | print this help |\n\n")
	markdownExits(&b, h.exitsOf(c))
	fmt.Fprintf(&b, "## See also\n\n[nexcage](nexcage.md), `man nexcage-%s`\n\n%s\n", c.name, generatedNote)
	return b.Bytes()
}

// Man pages (man(7) roff, checked with mandoc -T lint and groff -ww).

// roffEscape makes text literal in roff: backslashes, minus signs (so
// flags copy and paste as ASCII), non-ASCII characters, and a leading
// control character.
func roffEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 0x7e:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		lines = append(lines, roffWrap(l)...)
	}
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// roffWrap breaks a long text line at spaces: roff fills the text again,
// and short source lines are what man-pages(7) and mandoc's lint ask for.
func roffWrap(l string) []string {
	const width = 78
	var out []string
	for len(l) > width {
		i := strings.LastIndex(l[:width+1], " ")
		if i <= 0 {
			break
		}
		out = append(out, l[:i])
		l = strings.TrimLeft(l[i+1:], " ")
	}
	return append(out, l)
}

func roffLines(lines []string) string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = roffEscape(strings.TrimSpace(l))
	}
	return strings.Join(out, "\n")
}

var synopsisWord = regexp.MustCompile(`[A-Z][A-Z0-9_]*|--?[a-z][a-z0-9-]*|[a-z][a-z0-9-]*|<[a-z]+>`)

// roffSynopsis sets a usage line: placeholders (IMAGE, <command>) in
// italics, literal words and flags in bold.
func roffSynopsis(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range synopsisWord.FindAllStringIndex(s, -1) {
		b.WriteString(roffEscape(s[last:m[0]]))
		w := s[m[0]:m[1]]
		switch {
		case strings.HasPrefix(w, "<"):
			b.WriteString(`\fI` + roffEscape(strings.Trim(w, "<>")) + `\fR`)
		case w == strings.ToUpper(w):
			b.WriteString(`\fI` + roffEscape(w) + `\fR`)
		default:
			b.WriteString(`\fB` + roffEscape(w) + `\fR`)
		}
		last = m[1]
	}
	b.WriteString(roffEscape(s[last:]))
	return b.String()
}

func manHeader(b *bytes.Buffer, name, summary string) {
	// No date: the page must not change unless the command table does.
	fmt.Fprintf(b, ".\\\" %s\n", generatedNote)
	fmt.Fprintf(b, ".TH %s 1 \"\" \"nexcage\" \"nexcage manual\"\n", roffEscape(strings.ToUpper(name)))
	// Flags and paths must not be hyphenated, and are easier to read
	// without the gaps of justified text.
	b.WriteString(".nh\n.ad l\n")
	fmt.Fprintf(b, ".SH NAME\n%s\n", roffEscape(name+" - "+summary))
}

func manHelp(b *bytes.Buffer, help string) {
	for i, blk := range helpBlocks(docText(help)) {
		// .SH starts a paragraph already.
		pp := ".PP\n"
		if i == 0 {
			pp = ""
		}
		switch blk.kind {
		case paraBlock:
			fmt.Fprintf(b, "%s%s\n", pp, roffLines(blk.lines))
		case termBlock:
			fmt.Fprintf(b, ".TP\n.B %s\n%s\n", roffMacroArg(blk.term), roffLines(blk.lines))
		case preBlock:
			fmt.Fprintf(b, "%s.nf\n.RS\n%s\n.RE\n.fi\n", pp, roffEscape(strings.Join(blk.lines, "\n")))
		}
	}
}

// roffMacroArg is s as the single argument of a macro.
func roffMacroArg(s string) string {
	return `"` + strings.ReplaceAll(roffEscape(s), `"`, `\(dq`) + `"`
}

func manExits(b *bytes.Buffer, exits []exitStatus) {
	b.WriteString(".SH EXIT STATUS\n")
	for _, e := range exits {
		fmt.Fprintf(b, ".TP\n.B %d\n%s\n", e.code, roffEscape(e.meaning))
	}
	fmt.Fprintf(b, ".TP\n.B 128+N\n%s\n", roffEscape(interruptedMeaning))
}

func manIndex(h topHelp) []byte {
	var b bytes.Buffer
	manHeader(&b, "nexcage", strings.TrimSuffix(strings.TrimPrefix(h.tagline, "nexcage "), "."))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n%s\n.br\n%s\n.br\n%s\n", roffSynopsis(h.synopsis), roffSynopsis("nexcage <command> --help"), roffSynopsis("nexcage --version"))
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", roffEscape(h.tagline))
	b.WriteString(".PP\nEvery command takes \\fB\\-\\-json\\fR (one JSON result object on stdout)\nand \\fB\\-q\\fR, \\fB\\-\\-quiet\\fR (no progress on stderr).\n")
	b.WriteString(".SH COMMANDS\n")
	for _, c := range visibleCommands() {
		fmt.Fprintf(&b, ".TP\n.BR nexcage\\-%s (1)\n%s\n", roffEscape(c.name), roffEscape(c.summary))
	}
	manExits(&b, h.exitsOf(nil))
	b.WriteString(".SH SEE ALSO\n")
	cs := visibleCommands()
	for i, c := range cs {
		sep := ","
		if i == len(cs)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, ".BR nexcage\\-%s (1)%s\n", roffEscape(c.name), sep)
	}
	return b.Bytes()
}

func manCommand(h topHelp, c *command) []byte {
	var b bytes.Buffer
	manHeader(&b, "nexcage-"+c.name, c.summary)
	fmt.Fprintf(&b, ".SH SYNOPSIS\n%s\n", roffSynopsis(usageLine(c)))
	b.WriteString(".SH DESCRIPTION\n")
	manHelp(&b, description(c))
	b.WriteString(".SH OPTIONS\n")
	for _, f := range docFlags(c) {
		b.WriteString(".TP\n")
		if f.Shorthand != "" {
			fmt.Fprintf(&b, "\\fB\\-%s\\fR, ", roffEscape(f.Shorthand))
		}
		fmt.Fprintf(&b, "\\fB\\-\\-%s\\fR", roffEscape(f.Name))
		if t := f.Value.Type(); t != "bool" {
			fmt.Fprintf(&b, " \\fI%s\\fR", roffEscape(strings.TrimSuffix(t, "Array")))
		}
		fmt.Fprintf(&b, "\n%s\n", roffEscape(docText(f.Usage)))
		if strings.HasSuffix(f.Value.Type(), "Array") {
			b.WriteString("Repeatable.\n")
		}
		if d := flagDefault(f); d != "" {
			fmt.Fprintf(&b, ".br\nDefault: \\fB%s\\fR\n", roffEscape(d))
		}
	}
	b.WriteString(".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nprint this help\n")
	manExits(&b, h.exitsOf(c))
	fmt.Fprintf(&b, ".SH SEE ALSO\n.BR nexcage (1)\n")
	return b.Bytes()
}
