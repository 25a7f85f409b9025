package lxc

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/testenv"
)

// FuzzParseRender: whatever parses renders to a config that parses to the
// same thing and renders identically.
func FuzzParseRender(f *testing.F) {
	f.Add("arch: amd64\nhostname: a\nmp0: /x,mp=/y,ro=1\nlxc.init.cwd: /srv\nlxc.environment.runtime: A=1\n")
	f.Add("#desc\nmemory: 512\nnet0: name=eth0\n[snap]\narch: x\n")
	f.Add("lxc.cgroup2.devices.allow = c 1:3 rwm\n")
	f.Fuzz(func(t *testing.T, text string) {
		defer testenv.Timed(t)()
		c, err := Parse(text)
		if testenv.Refused(t, err) {
			return
		}
		once := c.Render()
		c2, err := Parse(once)
		if err != nil {
			t.Fatalf("rendered config does not parse: %v\n%s", err, once)
		}
		if twice := c2.Render(); twice != once {
			t.Fatalf("render is not stable:\n%s\n---\n%s", once, twice)
		}
	})
}

// FuzzFromSpec maps arbitrary config.json content: no panic, and every
// refusal is an error with a message.
func FuzzFromSpec(f *testing.F) {
	f.Add(`{"process":{"args":["/bin/app","x y"],"env":["A=1"],"cwd":"/srv","user":{"uid":1}},"mounts":[{"destination":"/d","type":"bind","source":"/s","options":["ro"]},{"destination":"/t","type":"tmpfs"}]}`, false)
	f.Add(`{"mounts":[{"destination":"rel","type":"bind","source":"x"}]}`, true)
	f.Fuzz(func(t *testing.T, raw string, system bool) {
		defer testenv.Timed(t)()
		var spec rspec.Spec
		if json.Unmarshal([]byte(raw), &spec) != nil {
			return
		}
		c, err := FromSpec(&spec, system)
		if testenv.Refused(t, err) {
			return
		}
		if _, err := Parse(c.Render()); err != nil {
			t.Fatalf("FromSpec made a config PVE would refuse: %v\n%s", err, c.Render())
		}
		// Deploy reads a template's .conf as untrusted: whatever convert
		// writes must pass.
		if _, err := ParseTemplateConfig(c.Render()); err != nil {
			t.Fatalf("FromSpec made a config deploy refuses: %v\n%s", err, c.Render())
		}
	})
}

func FuzzJoinSplitCommand(f *testing.F) {
	f.Add("/bin/sh", "-c", "echo 'hi'")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		defer testenv.Timed(t)()
		args := []string{a, b, c}
		line, err := JoinCommand(args)
		if err != nil {
			return
		}
		if got := SplitCommand(line); !reflect.DeepEqual(got, args) {
			t.Fatalf("%q -> %q -> %q", args, line, got)
		}
	})
}

// FuzzInitCommand: a shell script InitCommand rewrites reads back as an
// eval with no single quote, every other argument unchanged.
func FuzzInitCommand(f *testing.F) {
	f.Add(`echo "it's" && run`, "x")
	f.Fuzz(func(t *testing.T, script, extra string) {
		args := []string{"/bin/sh", "-c", script, extra}
		line, rewritten, err := InitCommand(args)
		if err != nil {
			return
		}
		got := SplitCommand(line)
		if !rewritten {
			if !reflect.DeepEqual(got, args) {
				t.Fatalf("%q -> %q -> %q", args, line, got)
			}
			return
		}
		if len(got) != 4 || got[0] != args[0] || got[1] != args[1] || got[3] != extra || strings.Contains(got[2], "'") || !strings.HasPrefix(got[2], `eval "`) {
			t.Fatalf("%q -> %q -> %q", args, line, got)
		}
	})
}
