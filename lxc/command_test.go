package lxc

import (
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// hazards are arguments that each break a naive quoting one way or another.
var hazards = [][]string{
	{"/opt/my app/run", "--name", "a b"},
	{"/bin/echo", "it's", `say "hi"`, "$HOME", `back\slash`, `\`, "", "''", `""`, "`id`", "a\tb", " lead", "trail ", "  "},
	{"'/starts/with/quote"},
	{`"`, "'"},
	{"x", `it's "both" without blanks`[:0] + `it's"both"`},
	{"/bin/sh", "-c", `echo 'x'`},
	{"'a b'", `"c d"`},
	{"/opt/a b", `x"`},
	{"é ü", "\u00a0nbsp\u00a0", "日本 語"},
	{"/a", "mid'quote", `mid"quote`, "ends'", `ends"`},
}

// TestJoinCommandEveryHazard: each argv comes back exactly from the line
// JoinCommand writes, read the way PVE and LXC read it.
func TestJoinCommandEveryHazard(t *testing.T) {
	for _, args := range hazards {
		line, err := JoinCommand(args)
		if err != nil {
			t.Errorf("%q: %v", args, err)
			continue
		}
		if got := SplitCommand(line); !reflect.DeepEqual(got, args) {
			t.Errorf("%q -> %q -> %q", args, line, got)
		}
	}
}

// TestSplitCommandIsLXC pins SplitCommand to what LXC 5's parse_line and
// lxc_string_split_quoted do with an lxc.init.cmd value (read from their
// source; the boot test in convert shows the real thing agrees).
func TestSplitCommandIsLXC(t *testing.T) {
	for line, want := range map[string][]string{
		// The example: the outer quotes go first.
		`'/opt/my app/run' --name 'a b'`: {"/opt/my", "app/run'", "--name"},
		`/bin/x 'a b'c`:                  {"/bin/x", "a b", "c"},
		`/bin/x it's`:                    {"/bin/x", "it's"},
		`/bin/x 'open`:                   {"/bin/x"},
		`  /bin/x  ''  `:                 {"/bin/x", ""},
		`''/a' 'b''`:                     {"/a", "b"},
	} {
		if got := SplitCommand(line); !reflect.DeepEqual(got, want) {
			t.Errorf("SplitCommand(%q) = %q, want %q", line, got, want)
		}
	}
	if got := SplitWords(`'/opt/my app/run' --name 'a b'`); !reflect.DeepEqual(got, []string{"/opt/my app/run", "--name", "a b"}) {
		t.Errorf("SplitWords keeps a person's quoting: %q", got)
	}
}

func TestJoinCommandRefusesOnlyTheInexpressible(t *testing.T) {
	for i, args := range [][]string{{`both ' and " blank`}, {"x", `'starts"`}, {"x", "new\nline"}} {
		_, err := JoinCommand(args)
		var ce *CommandError
		if !errors.As(err, &ce) || ce.Index != len(args)-1 {
			t.Errorf("%d: %q: err %v, want a CommandError for the last argument", i, args, err)
		}
	}
}

// TestInitCommandShellForm: a shell-form CMD whose script holds both
// quote kinds becomes an eval of the same script, which the boot test in
// convert runs; other inexpressible arguments stay refused.
func TestInitCommandShellForm(t *testing.T) {
	script := `echo "it's running" && echo '$HOME "x"' \ done`
	line, rewritten, err := InitCommand([]string{"/bin/sh", "-c", script})
	if err != nil || !rewritten {
		t.Fatalf("InitCommand: %q %v %v", line, rewritten, err)
	}
	got := SplitCommand(line)
	want := []string{"/bin/sh", "-c", `eval "echo \"it$(printf \\047)s running\" && echo $(printf \\047)\$HOME \"x\"$(printf \\047) \\ done"`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if line, rewritten, err := InitCommand([]string{"/bin/sh", "-c", "echo 'hi'"}); err != nil || rewritten || line != `/bin/sh -c "echo 'hi'"` {
		t.Errorf("a script LXC carries as it is was rewritten: %q %v %v", line, rewritten, err)
	}
	if _, _, err := InitCommand([]string{"/srv/app", "-c", `both ' and " blank`}); err == nil {
		t.Error("a non-shell's argument was rewritten")
	}
	if _, _, err := InitCommand([]string{"/bin/sh", "-c", "x", `both ' and " blank`}); err == nil {
		t.Error("an argument after the script was accepted")
	}
}

func TestFromSpecEnv(t *testing.T) {
	spec := func(env ...string) *rspec.Spec {
		return &rspec.Spec{Process: &rspec.Process{Args: []string{"/app"}, Env: env}}
	}
	c, err := FromSpec(spec("LEAD= x", "EMPTY=", "MID=a  b"), false)
	if err != nil || !reflect.DeepEqual(c.Env, []string{"LEAD= x", "EMPTY=", "MID=a  b"}) {
		t.Errorf("%+v %v", c, err)
	}
	for _, e := range []string{"TRAIL=value ", "BLANK= ", "TWO=x  "} {
		_, err := FromSpec(spec("OK=1", e), false)
		var ee *EnvError
		if !errors.As(err, &ee) || ee.Index != 1 || ee.Name != strings.Split(e, "=")[0] || !strings.Contains(err.Error(), "trim") {
			t.Errorf("%q: %v, want an EnvError naming it", e, err)
		}
		if _, err := FromSpec(spec("OK=1", e), true); err == nil {
			t.Errorf("%q accepted for a system container", e)
		}
	}
}

// TestEvalScriptRunsTheSame: the rewritten script prints what the
// original does, run by this host's /bin/sh with the same $0 and
// arguments.
func TestEvalScriptRunsTheSame(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh on this host")
	}
	for _, script := range []string{
		`echo "it's running" && echo '$HOME "q"'`,
		`printf '%s|' "$0" "$@" 'a\tb' "x\\y" \' \" ; echo`,
		`for a in "$@"; do echo "[$a]" 'lit ` + "`" + `x` + "`" + `'; done`,
		`f() { echo "'$1'"; }; f "a b"; echo $((1+2)) '!'`,
	} {
		run := func(s string) string {
			out, err := exec.Command("sh", "-c", s, "name", "arg 1", "it's").CombinedOutput()
			if err != nil {
				t.Fatalf("sh -c %q: %v\n%s", s, err, out)
			}
			return string(out)
		}
		ev := evalScript(script)
		if strings.Contains(ev, "'") {
			t.Errorf("%q still holds a single quote", ev)
		}
		if want, got := run(script), run(ev); got != want {
			t.Errorf("%q:\n original %q\n eval     %q", script, want, got)
		}
	}
}
