package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

// corpusByName is one case of the test image corpus.
func corpusByName(t *testing.T, name string) testimage.Case {
	t.Helper()
	cases, err := testimage.Corpus()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no corpus case %q", name)
	return testimage.Case{}
}

// corpusLayout writes the corpus case name as tag into a fresh OCI layout
// and returns its oci: reference.
func corpusLayout(t *testing.T, name, tag string) string {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "layout")
	if err := testimage.WriteLayout(layout, tag, corpusByName(t, name)); err != nil {
		t.Fatal(err)
	}
	return "oci:" + layout + ":" + tag
}

// TestHintNamesTheFlag: the libraries name no flag; the CLI's error still
// names the flag (or command) that fixes it, added by hint in run.
func TestHintNamesTheFlag(t *testing.T) {
	t.Setenv("NEXCAGE_STORE", filepath.Join(t.TempDir(), "store"))
	img := corpusLayout(t, "modes", "modes")

	for _, tc := range []struct {
		name  string
		args  func(t *testing.T) []string
		words []string
	}{
		{"plain-HTTP registry", func(t *testing.T) []string {
			return []string{"pull", testenv.Registry404On127002(t, false) + "/x:1"}
		}, []string{"speaks plain HTTP", "pass --insecure to allow it"}},
		{"unverifiable certificate", func(t *testing.T) []string {
			return []string{"pull", testenv.Registry404On127002(t, true) + "/x:1"}
		}, []string{"cannot be verified", "allow insecure registries (--insecure)"}},
		{"platform missing", func(t *testing.T) []string {
			return []string{"pull", "--platform", "linux/s390x", img}
		}, []string{"linux/s390x", "--platform"}},
		{"limit exceeded", func(t *testing.T) []string {
			return []string{"unpack", "--max-entries", "1", img, filepath.Join(t.TempDir(), "bundle")}
		}, []string{"entries limit", "raise it with --max-entries"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args(t)...)
			if code != exitFailure {
				t.Errorf("exit %d, want %d\n%s", code, exitFailure, stderr)
			}
			for _, w := range tc.words {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestHintPct: a pct.Error names Options fields; the CLI shows deploy's
// flags in their place, PVE's output with --verbose, once.
func TestHintPct(t *testing.T) {
	c := commands["deploy"]
	e := &env{cmd: c, flags: newFlagSet(c, &opts{})}
	perr := pct.MapError([]string{"pct", "create", "100"}, "CT 100 already exists on node 'pve'\n", 255)
	if strings.Contains(perr.Error(), "--") {
		t.Fatalf("pct names a flag: %v", perr)
	}
	got := hint(e, perr).Error()
	if want := "CT 100 already exists on node 'pve': choose another --vmid, or leave --vmid unset for the next free one"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// Hinting twice (a command hinting its own error, then run) is once.
	if again := hint(e, hint(e, perr)).Error(); again != got {
		t.Errorf("hinted twice: %q", again)
	}
	if !errors.Is(hint(e, perr), pct.ErrAlreadyExists) {
		t.Error("the hint hides the error's kind")
	}
	// PVE's parameter check names PVE's parameters: the command's flags
	// of the same name.
	perr400 := pct.MapError([]string{"pct", "create", "100"}, "400 Parameter verification failed.\nhostname: invalid format - value does not look like a valid DNS name\nonboot: type check ('boolean') failed - got 'maybe'\n", 255)
	if got, want := hint(e, perr400).Error(), "PVE refused --hostname: invalid format - value does not look like a valid DNS name; onboot: type check ('boolean') failed - got 'maybe': use a DNS name: letters, digits and '-', dot-separated (--hostname)"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e.verbose = true
	if got := hint(e, perr).Error(); strings.Count(got, "exit status 255") != 1 {
		t.Errorf("--verbose: %q, want PVE's output once", got)
	}
}

// TestHintHealth: a check result's repair and remedy become commands.
func TestHintHealth(t *testing.T) {
	r := cliResult(health.Result{Status: health.Warn, Target: "local", Check: "partial upload x", Cause: "c", Repair: "removes it", Fix: "deploy the template again"})
	if want := "`nexcage check --repair local` removes it; deploy the template again"; r.Fix != want {
		t.Errorf("repair: %q, want %q", r.Fix, want)
	}
	r = cliResult(health.Result{Status: health.Fail, Target: "local", Check: "t", Cause: "c", Fix: "upload it again", Remedy: health.Redeploy})
	if !strings.Contains(r.Fix, "nexcage deploy --replace-template") {
		t.Errorf("redeploy: %q", r.Fix)
	}
	r = cliResult(health.Result{Status: health.Fail, Target: "t", Check: "owners", Cause: "c", Fix: "rebuild it with SquashHighIDs, or with Privileged", Fields: "SquashHighIDs,Privileged", Remedy: health.Rebuild})
	if want := "rebuild it with --squash-high-ids, or with --privileged (`nexcage build --force`, or `nexcage convert`)"; r.Fix != want {
		t.Errorf("fields and rebuild: %q, want %q", r.Fix, want)
	}
	r = cliResult(health.Result{Status: health.Fail, Target: "b", Check: "config.json", Cause: "c", Fix: "a bundle is a directory", Remedy: health.NewBundle})
	if !strings.Contains(r.Fix, "a bundle is a directory: make one with `nexcage unpack IMAGE DIR`") {
		t.Errorf("new bundle: %q", r.Fix)
	}
	done := health.Result{Status: health.OK, Target: "local", Check: "t", Fix: "removed it", Repaired: true, Repair: "removes it"}
	if r := cliResult(done); r != done {
		t.Errorf("a repaired result changed: %+v", r)
	}
}

// TestHintRootfsErrorsAreTyped: what the CLI hints on is a type or a
// sentinel, not the library's words.
func TestHintRootfsErrorsAreTyped(t *testing.T) {
	c := commands["pull"]
	e := &env{cmd: c, flags: newFlagSet(c, &opts{})}
	pe := &rootfs.PlatformError{Image: "x", Want: rootfs.Platform{OS: "linux", Architecture: "arm64"}, Offered: []string{"linux/amd64"}, Single: true}
	if got := hint(e, pe).Error(); !strings.Contains(got, "pass --platform linux/amd64 to use it anyway") || !errors.Is(hint(e, pe), rootfs.ErrPlatform) {
		t.Errorf("single platform: %q", got)
	}
}

// argvFiles may hold "--flag" inside longer literals: they build the argv
// of tar, skopeo, lxc-attach and the PVE oracle in tests. (A literal that
// is one option alone, "--purge", is an argv element anywhere.)
var argvFiles = map[string]bool{
	"internal/pvetest/pvetest.go":     true, // tar and lxc-attach argv
	"internal/pveoracle/pveoracle.go": true, // the PVE CLI oracle's argv and its refusals
	"internal/testimage/process.go":   true, // a process's args
	"internal/testenv/testenv.go":     true, // skopeo argv
	"internal/testenv/nobody.go":      true, // setpriv argv
	"internal/testenv/sparse.go":      true, // tar argv
}

// argvElement is a literal that is one option of another program's argv.
var argvElement = regexp.MustCompile(`^--[a-z0-9-]+=?$`)

// otherTools are mentions of another program's options in a message
// (what PVE's tar or pct does), not nexcage's flags.
var otherTools = regexp.MustCompile(`tar --one-file-system|anchored --exclude|--exclude \./dev/\*|--skip-old-files|pct create --ostype|pct create's --password=`)

// pinned are strings a library writes into a template's files, which say
// a flag but cannot change: the files' bytes are pinned.
var pinned = map[string]string{
	"image volume: storage at deploy (--volume-size)": "convert/metadata.go: every .json sidecar with an image volume records it (TestTemplateBytesArePinned)",
}

// flagInString is a CLI flag inside a string literal (backquoted other
// tools' commands left out); nexcageCommand is a nexcage command in one.
var (
	flagInString   = regexp.MustCompile("(^|[\\s(`'\"])--[a-z]")
	nexcageCommand = regexp.MustCompile(`nexcage (pull|unpack|build|convert|generate|deploy|create|check|list)\b`)
)

// TestLibrariesNameNoFlags: library packages say what is wrong in their
// own words; only cmd/nexcage names its flags (hints.go). A string literal
// holding "--flag" is a message speaking CLI, unless its file builds argvs
// (argvFiles) or the literal is inside backquotes naming another tool's
// command ("`pvesm set local --disable 0`").
func TestLibrariesNameNoFlags(t *testing.T) {
	root := filepath.Join("..", "..")
	var bad []string
	for _, dir := range []string{"rootfs", "pct", "convert", "lxc", "generate", "template", "pipeline", "health", "progress", "tartree", "internal"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.Contains(p, "testdata") {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			if argvFiles[rel] {
				return nil
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				t.Errorf("%s: %v", rel, err)
				return nil
			}
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				flags := otherTools.ReplaceAllString(regexp.MustCompile("`[^`]*`").ReplaceAllString(s, ""), "")
				if pinned[s] == "" && (!argvElement.MatchString(s) && flagInString.MatchString(flags) || nexcageCommand.MatchString(s)) {
					bad = append(bad, fset.Position(lit.Pos()).String()+": "+lit.Value)
				}
				return true
			})
			return nil
		})
	}
	if len(bad) > 0 {
		t.Errorf("library strings naming a CLI flag or command (move the hint to cmd/nexcage/hints.go, or, for an argv builder, add the file to argvFiles):\n%s", strings.Join(bad, "\n"))
	}
}

// TestHintBundleAndNameErrors: convert's and the bundle writer's typed
// errors get the flags and commands that fix them.
func TestHintBundleAndNameErrors(t *testing.T) {
	c := commands["convert"]
	e := &env{cmd: c, flags: newFlagSet(c, &opts{})}
	_, err := convert.LoadBundle(filepath.Join(t.TempDir(), "none"))
	if got := hint(e, err).Error(); !errors.Is(err, convert.ErrNotBundle) || !strings.HasSuffix(got, "(usually rootfs/): make one with `nexcage unpack IMAGE DIR` or `nexcage generate`") {
		t.Errorf("no bundle: %q", got)
	}
	unnamed := fmt.Errorf("convert: %w", template.ErrUnnamed)
	if got := hint(e, unnamed).Error(); !strings.HasSuffix(got, ": pass --name (and --template-version), or -o FILE") {
		t.Errorf("unnamed: %q", got)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
	_, err = atomicfile.NewDir(dir, false)
	if got, want := hint(e, err).Error(), "bundle directory "+dir+" is not empty: choose a new directory, or pass --force to replace its contents"; got != want || !errors.Is(hint(e, err), rootfs.ErrBundleExists) {
		t.Errorf("non-empty bundle: %q, want %q", got, want)
	}
}
