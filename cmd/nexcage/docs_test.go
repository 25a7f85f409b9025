package main

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/rootfs"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/commands and docs/man from the command table (make docs)")

const regenerate = "make docs (go test ./cmd/nexcage -run TestGeneratedDocs -update)"

// generatedPaths are the files in the repository that look generated:
// one left over from a removed command must go too.
func generatedPaths(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"docs/commands/nexcage*.md", "docs/man/nexcage*.1"} {
		m, err := filepath.Glob(filepath.Join(root, pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
	}
	return out
}

// TestGeneratedDocs fails when a committed reference page or man page is
// not what the command table generates, naming the file and the command
// that rewrites it; with -update it rewrites them.
func TestGeneratedDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := docFiles()
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(files))
	if *updateDocs {
		for _, old := range generatedPaths(t, root) {
			if _, ok := files[old]; !ok {
				if err := os.Remove(filepath.Join(root, old)); err != nil {
					t.Fatal(err)
				}
				t.Logf("removed %s", old)
			}
		}
		for _, n := range names {
			p := filepath.Join(root, n)
			if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, files[n]) {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, files[n], 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", n)
		}
	}
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(root, n))
		switch {
		case os.IsNotExist(err):
			t.Errorf("%s is missing: run %s", n, regenerate)
		case err != nil:
			t.Error(err)
		case !bytes.Equal(got, files[n]):
			t.Errorf("%s is stale: the command table says otherwise; run %s", n, regenerate)
		}
	}
	for _, p := range generatedPaths(t, root) {
		if _, ok := files[p]; !ok {
			t.Errorf("%s is for no command of the table: run %s, which deletes it", p, regenerate)
		}
	}
}

// TestDocsFromCommandTable checks what the pages say against the table
// and the --help output: every command, every flag with its type and
// default, the completion command, no hidden helper, and nothing that
// depends on the machine generating them.
func TestDocsFromCommandTable(t *testing.T) {
	files, err := docFiles()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := docFiles()
	for n, b := range files {
		if !bytes.Equal(b, again[n]) {
			t.Errorf("%s differs between two generations", n)
		}
		if bytes.Contains(b, []byte(completeCommand)) {
			t.Errorf("%s mentions the hidden %s command", n, completeCommand)
		}
		if host := rootfs.HostPlatform().String(); host != "linux/amd64" && bytes.Contains(b, []byte(host)) {
			t.Errorf("%s names this machine's platform %s", n, host)
		}
	}
	if _, ok := commands["completion"]; !ok {
		t.Fatal("no completion command in the table")
	}
	index := string(files["docs/commands/nexcage.md"])
	manIndex := string(files["docs/man/nexcage.1"])
	var top bytes.Buffer
	printTopHelp(&top)
	for _, c := range visibleCommands() {
		md := string(files["docs/commands/nexcage-"+c.name+".md"])
		man := string(files["docs/man/nexcage-"+c.name+".1"])
		if md == "" || man == "" {
			t.Fatalf("no page for %s", c.name)
		}
		if !strings.Contains(index, "[`"+c.name+"`]") && !strings.Contains(index, "["+c.name+"](nexcage-"+c.name+".md)") {
			t.Errorf("the index does not link %s", c.name)
		}
		if !strings.Contains(manIndex, ".BR nexcage\\-"+roffEscape(c.name)+" (1)") {
			t.Errorf("nexcage.1 does not refer to nexcage-%s(1)", c.name)
		}
		if !strings.Contains(top.String(), c.name) || !strings.Contains(top.String(), c.summary) {
			t.Errorf("nexcage --help does not list %s: %s", c.name, c.summary)
		}
		if !strings.Contains(md, "```\n"+usageLine(c)+"\n```") {
			t.Errorf("%s.md lacks the usage line %q", c.name, usageLine(c))
		}
		var help bytes.Buffer
		printCommandHelp(&help, c, newFlagSet(c, &opts{}))
		for _, f := range docFlags(c) {
			row := "| `--" + f.Name + "` | " + flagType(f) + " | "
			if f.Shorthand != "" {
				row = "| `-" + f.Shorthand + ", --" + f.Name + "` | " + flagType(f) + " | "
			}
			if d := flagDefault(f); d != "" {
				row += "`" + d + "` |"
			} else {
				row += " |"
			}
			if !strings.Contains(md, row) {
				t.Errorf("%s.md has no row %q", c.name, row)
			}
			if !strings.Contains(man, "\\fB\\-\\-"+roffEscape(f.Name)+"\\fR") {
				t.Errorf("nexcage-%s.1 lacks --%s", c.name, f.Name)
			}
			if !strings.Contains(help.String(), "--"+f.Name) {
				t.Errorf("nexcage %s --help lacks --%s that the docs list", c.name, f.Name)
			}
		}
		for _, want := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS", ".SH EXIT STATUS", ".SH SEE ALSO", ".B 0\n", ".B 1\n", ".B 2\n"} {
			if !strings.Contains(man, want) {
				t.Errorf("nexcage-%s.1 lacks %q", c.name, want)
			}
		}
		if has3 := strings.Contains(man, ".B 3\n"); has3 != (c.name == "check") {
			t.Errorf("nexcage-%s.1: exit status 3 listed = %v, want it for check only", c.name, has3)
		}
	}
	comp := string(files["docs/commands/nexcage-completion.md"])
	for _, sh := range shells {
		if !strings.Contains(comp, "- `"+sh+"`") {
			t.Errorf("completion's page does not explain %s", sh)
		}
	}
}

// overstrike is how a terminal page sets bold and underline: "X\bX", "_\bX".
var overstrike = regexp.MustCompile(".\x08")

// TestManPagesLint renders every generated man page with mandoc and groff
// and fails on any warning from either; man -l must show the NAME line.
func TestManPagesLint(t *testing.T) {
	mandoc := testenv.RequireTool(t, "mandoc")
	groff := testenv.RequireTool(t, "groff")
	files, err := docFiles()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for n, b := range files {
		if !strings.HasSuffix(n, ".1") {
			continue
		}
		p := filepath.Join(dir, filepath.Base(n))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// -W style reports even the style nits (e.g. a missing date), which
		// mandoc rates below warnings: only the date one is expected.
		out, _ := exec.Command(mandoc, "-T", "lint", "-W", "style", p).CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.Contains(l, "missing date") {
				t.Errorf("mandoc -T lint %s: %s", n, l)
			}
		}
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff -man -Tutf8 -ww %s: %v\n%s", n, err, stderr.String())
		}
		page, err := exec.Command(mandoc, "-T", "utf8", p).Output()
		if err != nil {
			t.Fatalf("mandoc -T utf8 %s: %v", n, err)
		}
		page = overstrike.ReplaceAll(page, nil)
		name := strings.TrimSuffix(filepath.Base(n), ".1")
		if !strings.Contains(string(page), "NAME\n       "+name+" - ") {
			t.Errorf("%s renders without its NAME line:\n%s", n, page)
		}
	}
}
