package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/pct"
)

func candidateValues(cs []candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.value)
	}
	return out
}

// TestCompleteWords is the completion engine on its own: what `nexcage
// __complete` answers for each kind of word.
func TestCompleteWords(t *testing.T) {
	all := func(vs []string, want []string) bool {
		for _, w := range want {
			if !slices.Contains(vs, w) {
				return false
			}
		}
		return true
	}
	for _, tc := range []struct {
		words []string
		want  []string // exactly these, in order; nil: none
		has   []string // at least these (when want is nil)
		path  pathKind
	}{
		{words: []string{"bu"}, want: []string{"build"}},
		{words: []string{"c"}, want: []string{"check", "completion", "convert", "create"}},
		{words: []string{""}, has: []string{"build", "completion", "version"}},
		{words: []string{"--v"}, want: []string{"--version"}},
		{words: []string{"build", "--comp"}, want: []string{"--compression"}},
		{words: []string{"build", "--compression", ""}, want: []string{"zstd", "gzip", "xz"}},
		{words: []string{"build", "--compression", "g"}, want: []string{"gzip"}},
		{words: []string{"build", "--compression=x"}, want: []string{"--compression=xz"}},
		{words: []string{"build", "--pull", ""}, want: []string{"missing", "always", "never"}},
		{words: []string{"create", "--pull", "a"}, want: []string{"always"}},
		{words: []string{"convert", "--format", ""}, want: []string{"template", "oci-archive"}},
		{words: []string{"deploy", "--unprivileged", ""}, want: []string{"1", "0"}},
		{words: []string{"deploy", "--pve-version", ""}, want: pct.KnownVersions()},
		{words: []string{"generate", "--arch", ""}, want: generate.Archs},
		{words: []string{"build", "-o", ""}, path: anyPath},
		{words: []string{"build", "-qo", ""}, path: anyPath},
		{words: []string{"build", "-qo", "x", ""}, path: anyPath}, // the IMAGE after -o's value
		{words: []string{"build", "--output=b"}, path: anyPath},
		{words: []string{"build", "--store", ""}, path: dirPath},
		{words: []string{"generate", "--rootfs", "/t"}, path: dirPath},
		{words: []string{"generate", ""}, want: []string{"spec"}, path: dirPath},
		{words: []string{"generate", "spec", ""}, path: dirPath},
		{words: []string{"check", ""}, want: []string{"host", "store"}, path: anyPath},
		{words: []string{"deploy", "--vmid", "101", ""}, path: anyPath},
		{words: []string{"build", "--", "--comp"}, path: anyPath},
		{words: []string{"build", "--name", ""}},
		{words: []string{"version", ""}},
		{words: []string{"list", ""}},
		{words: []string{"completion", ""}, want: []string{"bash", "zsh", "fish"}},
		{words: []string{"completion", "z"}, want: []string{"zsh"}},
		{words: []string{"help", "dep"}, want: []string{"deploy"}},
		{words: []string{"nosuch", ""}},
		// A flag given once is not offered again; a repeatable one is.
		{words: []string{"build", "--force", "--fo"}},
		{words: []string{"generate", "--env", "A=1", "--en"}, want: []string{"--env"}},
		{words: []string{"build", "-"}, has: []string{"-o", "--output", "-j", "--jobs", "--compression", "--help"}},
		{words: []string{"build", "--"}, has: []string{"--output", "--jobs"}},
	} {
		cs, path := completeWords(tc.words)
		got := candidateValues(cs)
		name := strings.Join(tc.words, " ")
		switch {
		case tc.has != nil:
			if !all(got, tc.has) {
				t.Errorf("%q: got %q, want at least %q", name, got, tc.has)
			}
		case !slices.Equal(got, tc.want):
			t.Errorf("%q: got %q, want %q", name, got, tc.want)
		}
		if path != tc.path {
			t.Errorf("%q: path kind %d, want %d", name, path, tc.path)
		}
		if slices.Contains(got, completeCommand) {
			t.Errorf("%q offers the hidden %s", name, completeCommand)
		}
		if tc.has != nil && slices.Contains(got, "-o") && slices.Contains(tc.words, "--") && !strings.HasPrefix(tc.words[len(tc.words)-1], "-") {
			t.Errorf("%q offers shorthands for a --word", name)
		}
	}
	if cs, _ := completeWords([]string{"build", "--"}); slices.Contains(candidateValues(cs), "-o") {
		t.Errorf("build -- offers shorthands for a word that starts with --")
	}
}

// enumFlags are the flags with a fixed set of values, by name, with the
// set; a name means the same set in every command that has it.
func enumFlags(t *testing.T) map[string]valueSet {
	t.Helper()
	sets := map[string]valueSet{}
	for _, c := range visibleCommands() {
		for _, f := range docFlags(c) {
			vs := flagValueSet(f)
			if vs == nil {
				continue
			}
			if old, ok := sets[f.Name]; ok && !slices.Equal(old, vs) {
				t.Errorf("--%s takes %q in one command and %q in %s", f.Name, old, vs, c.name)
			}
			sets[f.Name] = vs
			for _, v := range vs {
				if !strings.Contains(f.Usage, v) {
					t.Errorf("nexcage %s --%s: help %q does not name the value %q it completes", c.name, f.Name, f.Usage, v)
				}
			}
		}
	}
	return sets
}

// TestFlagValueSets keeps the value sets honest: the flags the task names
// have one, every help names the values, the completion command's help
// lists exactly those flags, and the path and argument tables name flags
// and commands that exist.
func TestFlagValueSets(t *testing.T) {
	sets := enumFlags(t)
	var names []string
	for n := range sets {
		names = append(names, "--"+n)
	}
	sort.Strings(names)
	for _, want := range []string{"--compression", "--format", "--pull", "--unprivileged", "--pve-version", "--arch"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s has no value set: got sets for %q", want, names)
		}
	}
	if list := "(" + strings.Join(names, ", ") + ")"; !strings.Contains(oneLine(commands["completion"].help), list) {
		t.Errorf("completion's help does not list the flags with fixed values %s", list)
	}
	for n := range flagPaths {
		found := false
		for _, c := range visibleCommands() {
			found = found || newFlagSet(c, &opts{}).Lookup(n) != nil
		}
		if !found {
			t.Errorf("path completion for --%s, which no command has", n)
		}
	}
	for n := range argValues {
		if _, ok := commands[n]; !ok {
			t.Errorf("argument completion for %q, which is no command", n)
		}
	}
}

// TestFlagValuesAreWhatValidationTakes runs the binary with every value
// completion offers: none is a usage error, and a value outside the set
// is one (exit 2) whose message names every value of the set.
func TestFlagValuesAreWhatValidationTakes(t *testing.T) {
	bin := nexcageBinary(t)
	sets := enumFlags(t)
	tmp := t.TempDir()
	store := filepath.Join(tmp, "store")
	missing := filepath.Join(tmp, "missing")
	runBin := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+tmp, "XDG_CACHE_HOME="+tmp, "NEXCAGE_STORE="+store)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), stderr.String()
			}
			t.Fatal(err)
		}
		return 0, stderr.String()
	}
	cases := map[string]func(v string) []string{
		"pull": func(v string) []string {
			return []string{"unpack", "--pull", v, "oci:" + missing + ":x", filepath.Join(tmp, "b")}
		},
		"format":       func(v string) []string { return []string{"convert", "--format", v, "oci:" + missing + ":x"} },
		"compression":  func(v string) []string { return []string{"convert", "--compression", v, missing} },
		"unprivileged": func(v string) []string { return []string{"deploy", "--unprivileged", v, missing + ".tar.zst"} },
		"pve-version": func(v string) []string {
			return []string{"deploy", "--dry-run", "--pve-version", v, missing + ".tar.zst"}
		},
		"arch": func(v string) []string { return []string{"generate", "spec", "--force", "--arch", v, tmp} },
	}
	for flag, set := range sets {
		args, ok := cases[flag]
		if !ok {
			t.Errorf("--%s has a value set but no case here", flag)
			continue
		}
		for _, v := range set {
			status, stderr := runBin(args(v)...)
			if status == exitUsage || strings.Contains(stderr, "--"+flag+":") {
				t.Errorf("--%s %s, a completed value, is refused (exit %d): %s", flag, v, status, stderr)
			}
		}
		status, stderr := runBin(args("bogus")...)
		if status != exitUsage {
			t.Errorf("--%s bogus: exit %d, want %d:\n%s", flag, status, exitUsage, stderr)
		}
		for _, v := range set {
			if !strings.Contains(stderr, v) {
				t.Errorf("--%s bogus: the message does not offer %q:\n%s", flag, v, stderr)
			}
		}
	}
}

// completionEnv runs shells with the built binary first on PATH, as
// nexcage, and a home of their own.
func completionEnv(t *testing.T) (bin string, env []string, files string) {
	bin = nexcageBinary(t)
	home := t.TempDir()
	files = filepath.Join(home, "files")
	os.MkdirAll(filepath.Join(files, "dirA"), 0o755)
	os.WriteFile(filepath.Join(files, "fileB"), nil, 0o644)
	env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home, "XDG_CACHE_HOME="+home)
	return bin, env, files
}

func completionScript(t *testing.T, bin, shell string) string {
	out, err := exec.Command(bin, "completion", shell).Output()
	if err != nil {
		t.Fatalf("nexcage completion %s: %v", shell, err)
	}
	p := filepath.Join(t.TempDir(), "nexcage."+shell)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestBashCompletion sources the script `nexcage completion bash` prints
// and calls its function the way bash does on Tab, with COMP_WORDS split
// as readline splits them (--flag=value in three words).
func TestBashCompletion(t *testing.T) {
	bash := testenv.RequireTool(t, "bash")
	bin, env, files := completionEnv(t)
	script := completionScript(t, bin, "bash")
	complete := func(words ...string) []string {
		t.Helper()
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c",
			`source "$1" || exit 9; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _nexcage_complete; printf '%s\n' "${COMPREPLY[@]}"`,
			"bash", script)
		cmd.Args = append(cmd.Args, words...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", words, err, out)
		}
		got := lines(string(out))
		sort.Strings(got)
		return got
	}
	sorted := func(vs ...string) []string {
		vs = slices.Clone(vs)
		sort.Strings(vs)
		return vs
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"nexcage", "bu"}, []string{"build"}},
		{[]string{"nexcage", "comp"}, []string{"completion"}},
		{[]string{"nexcage", "build", "--comp"}, []string{"--compression"}},
		{[]string{"nexcage", "build", "--compression", ""}, sorted("zstd", "gzip", "xz")},
		{[]string{"nexcage", "build", "--compression", "z"}, []string{"zstd"}},
		// readline's word after "--compression=" is the value alone.
		{[]string{"nexcage", "build", "--compression", "="}, sorted("zstd", "gzip", "xz")},
		{[]string{"nexcage", "build", "--compression", "=", "x"}, []string{"xz"}},
		{[]string{"nexcage", "convert", "--format", ""}, sorted("template", "oci-archive")},
		{[]string{"nexcage", "build", "--pull", ""}, sorted("missing", "always", "never")},
		{[]string{"nexcage", "completion", ""}, sorted("bash", "fish", "zsh")},
		{[]string{"nexcage", "convert", files + "/"}, sorted(files+"/dirA", files+"/fileB")},
		{[]string{"nexcage", "build", "-o", files + "/f"}, []string{files + "/fileB"}},
		{[]string{"nexcage", "build", "--output", "=", files + "/f"}, []string{files + "/fileB"}},
		{[]string{"nexcage", "generate", "--rootfs", files + "/"}, []string{files + "/dirA"}},
		{[]string{"nexcage", "version", ""}, nil},
		{[]string{"nexcage", "__comp"}, nil},
	} {
		if got := complete(tc.words...); !slices.Equal(got, tc.want) {
			t.Errorf("bash: %q completes to %q, want %q", tc.words, got, tc.want)
		}
	}
	if got := complete("nexcage", ""); !slices.Contains(got, "completion") || slices.Contains(got, completeCommand) || len(got) != len(commands) {
		t.Errorf("bash: the command list is %q: want the %d commands of the table, no %s", got, len(commands), completeCommand)
	}
	got := complete("nexcage", "build", "-")
	for _, f := range []string{"--compression", "--format", "--jobs", "-j", "--deploy", "--help"} {
		if f == "--format" {
			if slices.Contains(got, f) {
				t.Errorf("bash: build offers convert's --format")
			}
			continue
		}
		if !slices.Contains(got, f) {
			t.Errorf("bash: build's flags %q lack %s", got, f)
		}
	}
}

// TestBashCompletionOnTerminal types into an interactive bash on a
// pseudo-terminal, so readline itself splits the words (--flag=value
// included) and applies the replies: what a user sees on Tab.
func TestBashCompletionOnTerminal(t *testing.T) {
	bash := testenv.RequireTool(t, "bash")
	bin, env, files := completionEnv(t)
	script := completionScript(t, bin, "bash")
	term := shellOnPTY(t, env, "PS1='> '; source "+script+"; cd "+files, bash, "--norc", "--noprofile", "-i")
	term.tabs([]tab{
		{"nexcage bu\t", "nexcage build "},
		{"nexcage build --comp\t", "nexcage build --compression "},
		{"nexcage build --compression \t\t", "gzip  xz    zstd"},
		{"nexcage build --compression=\t\t", "gzip  xz    zstd"},
		{"nexcage convert --format=oci\t", "nexcage convert --format=oci-archive "},
		{"nexcage generate --rootfs \t", "nexcage generate --rootfs dirA/"},
		{"nexcage build -o fi\t", "nexcage build -o fileB "},
	})
}

// tab is a line typed at a shell, Tab as \t, and what the terminal must
// show after it.
type tab struct{ typed, want string }

// tabs types each line on a fresh line (^U first) and waits for what it
// must show.
func (p *pty) tabs(tabs []tab) {
	p.t.Helper()
	for _, tc := range tabs {
		p.send("\x15" + tc.typed)
		p.waitFor(tc.want)
	}
}

// shellOnPTY starts shell on a dumb pseudo-terminal and runs setup in it,
// waiting until it has.
func shellOnPTY(t *testing.T, env []string, setup, shell string, args ...string) *pty {
	t.Helper()
	term := startOnPTY(t, append(env, "TERM=dumb"), shell, args...)
	// The quotes keep the echoed command line from matching.
	term.send(setup + "; echo RE''ADY\n")
	term.waitFor("READY")
	return term
}

// pty is a process on a pseudo-terminal and what it has written to it.
type pty struct {
	t      *testing.T
	master *os.File
	mu     sync.Mutex
	out    bytes.Buffer
}

// startOnPTY runs name on a new pseudo-terminal as its controlling
// terminal, as a login shell would be.
func startOnPTY(t *testing.T, env []string, name string, args ...string) *pty {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	p := &pty{t: t, master: master}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		master.Close()
		<-done
	})
	return p
}

func (p *pty) send(s string) {
	if _, err := p.master.WriteString(s); err != nil {
		p.t.Fatal(err)
	}
}

// waitFor waits until s appears in the output, then forgets the output
// up to it.
func (p *pty) waitFor(s string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		out := p.out.String()
		if i := strings.Index(out, s); i >= 0 {
			p.out.Next(i + len(s))
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.t.Fatalf("the terminal never showed %q; it shows:\n%q", s, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestZshCompletion checks the zsh script's syntax, then runs its function
// with stand-ins for the completion system's _describe, _files and
// compset (outside a completion widget zsh has none), which print what
// they are handed.
func TestZshCompletion(t *testing.T) {
	zsh := testenv.RequireTool(t, "zsh")
	bin, env, files := completionEnv(t)
	script := completionScript(t, bin, "zsh")
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	const harness = `
compdef() { print -r -- "compdef $*" >&2 }
_describe() { local a=${@[-1]} x; for x in "${(@P)a}"; do print -r -- "${x%%:*}"; done }
_files() { print -r -- "files $* $PREFIX" }
compset() { [[ $1 == -P ]] && PREFIX=${PREFIX#*=} }
source "$1" || exit 9
shift
words=("$@")
CURRENT=$#words
PREFIX=${words[-1]}
_nexcage
`
	complete := func(words ...string) []string {
		t.Helper()
		cmd := exec.Command(zsh, "-f", "-c", harness, "zsh", script)
		cmd.Args = append(cmd.Args, words...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, _ := cmd.Output()
		if !strings.Contains(stderr.String(), "compdef _nexcage nexcage") {
			t.Errorf("zsh: sourcing the script did not register _nexcage: %s", stderr.String())
		}
		return lines(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"nexcage", "bu"}, []string{"build"}},
		{[]string{"nexcage", "build", "--comp"}, []string{"--compression"}},
		{[]string{"nexcage", "build", "--compression", ""}, []string{"zstd", "gzip", "xz"}},
		{[]string{"nexcage", "build", "--compression=g"}, []string{"gzip"}},
		{[]string{"nexcage", "convert", "--format", ""}, []string{"template", "oci-archive"}},
		{[]string{"nexcage", "convert", files + "/"}, []string{"files  " + files + "/"}},
		{[]string{"nexcage", "generate", "--rootfs=" + files}, []string{"files -/ " + files}},
	} {
		if got := complete(tc.words...); !slices.Equal(got, tc.want) {
			t.Errorf("zsh: %q completes to %q, want %q", tc.words, got, tc.want)
		}
	}

	// Then the real completion system: compinit loads _nexcage from
	// fpath as a zsh user's setup does, and Tab goes through it.
	fpath := t.TempDir()
	b, _ := os.ReadFile(script)
	if err := os.WriteFile(filepath.Join(fpath, "_nexcage"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	term := shellOnPTY(t, env, "PS1='> '; fpath=("+fpath+" $fpath); autoload -U compinit; compinit -u -D; cd "+files, zsh, "-f", "-i")
	term.tabs([]tab{
		{"nexcage build --comp\t", "--compression"},
		{"nexcage build --compression \t", "zstd"},
		{"nexcage convert --format=o\t", "--format=oci-archive"},
		{"nexcage generate --rootfs di\t", "dirA/"},
	})
}

// TestFishCompletion checks the fish script's syntax, then asks fish
// itself what it completes (complete -C runs the completion machinery
// without a terminal).
func TestFishCompletion(t *testing.T) {
	fish := testenv.RequireTool(t, "fish")
	bin, env, files := completionEnv(t)
	script := completionScript(t, bin, "fish")
	if out, err := exec.Command(fish, "--no-config", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("fish -n: %v\n%s", err, out)
	}
	complete := func(line string) []string {
		t.Helper()
		cmd := exec.Command(fish, "--no-config", "-c", `source $argv[1]; or exit 9; complete -C $argv[2]`, script, line)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish complete -C %q: %v\n%s", line, err, out)
		}
		var got []string
		for _, l := range lines(string(out)) {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
		sort.Strings(got)
		return got
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"nexcage bu", []string{"build"}},
		{"nexcage build --comp", []string{"--compression"}},
		{"nexcage build --compression ", []string{"gzip", "xz", "zstd"}},
		{"nexcage build --compression=x", []string{"--compression=xz"}},
		{"nexcage convert --format ", []string{"oci-archive", "template"}},
		{"nexcage completion ", []string{"bash", "fish", "zsh"}},
		{"nexcage convert " + files + "/", []string{files + "/dirA/", files + "/fileB"}},
		{"nexcage generate --rootfs " + files + "/", []string{files + "/dirA/"}},
		{"nexcage build --output=" + files + "/f", []string{"--output=" + files + "/fileB"}},
		{"nexcage __comp", nil},
	} {
		if got := complete(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("fish: %q completes to %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCompletionCommand is the visible half: it prints a script per
// shell and refuses anything else; the hidden helper shows nowhere.
func TestCompletionCommand(t *testing.T) {
	bin := nexcageBinary(t)
	for _, sh := range shells {
		out, err := exec.Command(bin, "completion", sh).Output()
		if err != nil || !bytes.Contains(out, []byte(sh+" completion for nexcage")) || !bytes.Contains(out, []byte(completeCommand)) {
			t.Errorf("nexcage completion %s: %v\n%s", sh, err, out)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage || !strings.Contains(string(out), shells.String()) {
			t.Errorf("nexcage %q: %v, want exit %d naming %s\n%s", args, err, exitUsage, shells, out)
		}
	}
	for _, args := range [][]string{{"--help"}, {"completion", "--help"}, {"help", "completion"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte(completeCommand)) || !bytes.Contains(out, []byte("completion")) {
			t.Errorf("nexcage %q: %v; want completion listed and no %s:\n%s", args, err, completeCommand, out)
		}
	}
	if _, ok := commands[completeCommand]; ok {
		t.Errorf("%s is in the command table, so lists and docs would show it", completeCommand)
	}
}
