package testimage

import (
	"archive/tar"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ArgvScript is /opt/my app/run in alpine-argv: it only waits, so that
// /proc/1/cmdline shows the argv LXC gave it.
const ArgvScript = "#!/bin/sh\nwhile :; do sleep 3600; done\n"

// ArgvHazards is alpine-argv's Cmd: arguments with blanks, both quote
// kinds, shell characters, backslashes, empty strings. The last one needs
// quotes of the kind the first (the entrypoint, a path with a blank)
// starts with, so the whole line starts and ends with the same quote.
var ArgvHazards = []string{
	"--name", "it's", `say "hi"`, "$HOME", `back\slash`, `\`, "", "''", `""`, "`id`",
	"a\tb", " lead", "trail ", `it's"both"`, "ends'", `"`, "'", "é ü", "a b",
}

// ShellFormScript is alpine-shell-form's CMD as a Containerfile's shell
// form gives it (/bin/sh -c SCRIPT): both quote kinds and blanks in one
// argument. It writes ShellFormOutput to /tmp/out.
const (
	ShellFormScript = `echo "it's running" > /tmp/out; echo '$HOME "q"' >> /tmp/out; exec sleep infinity`
	ShellFormOutput = "it's running\n$HOME \"q\"\n"
)

// EnvBlanks is an Alpine image whose Env has a variable ending in a blank
// (TRAIL), which no CT config can carry: convert refuses it. It is not in
// Corpus, whose every image must convert.
func EnvBlanks() (v1.Image, error) {
	base, err := alpineLayer("amd64")
	if err != nil {
		return nil, err
	}
	return Image([]v1.Layer{base}, v1.Config{
		Cmd: []string{"sleep", "infinity"},
		Env: []string{pathEnv, "LEAD= x", "INNER=a  b", "TRAIL=value "},
	}, alpineTarballs["amd64"].platform, false)
}

// NamedUserPasswd and NamedUserGroup are alpine-named-user's account
// files: user app is 1000:1000 and a member of wheel (10) and audio (18).
const (
	NamedUserPasswd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
	NamedUserGroup  = "root:x:0:root\nwheel:x:10:root,app\naudio:x:18:app\napp:x:1000:\n"
)

// processCases are Alpine images whose config exercises how the image's
// process is mapped into the CT config; convert's boot tests start them.
func processCases(alpineExpect []Expect) ([]Case, error) {
	base, err := alpineLayer("amd64")
	if err != nil {
		return nil, err
	}
	plat := alpineTarballs["amd64"].platform
	label := func(name string) map[string]string { return map[string]string{"org.nexcage.testimage.case": name} }
	with := func(e ...Expect) []Expect { return append(append([]Expect(nil), alpineExpect...), e...) }

	var cases []Case
	add := func(name, about string, rootOnly bool, entries []Entry, cfg v1.Config, expect []Expect) error {
		layers := []v1.Layer{base}
		if entries != nil {
			l, err := Layer(entries, Gzip)
			if err != nil {
				return err
			}
			layers = append(layers, l)
		}
		cfg.Labels = label(name)
		img, err := Image(layers, cfg, plat, false)
		if err != nil {
			return fmt.Errorf("testimage: case %s: %w", name, err)
		}
		cases = append(cases, Case{Name: name, Image: img, RootOnly: rootOnly, Compression: Gzip, About: about, Expect: expect})
		return nil
	}
	if err := add("alpine-argv", "entrypoint \"/opt/my app/run\" (a blank in the path) and a Cmd of every quoting hazard: blanks, both quote kinds, $, backslashes, empty strings, a tab",
		false,
		[]Entry{Dir("opt/", 0o755), Dir("opt/my app/", 0o755), File("opt/my app/run", 0o755, ArgvScript)},
		v1.Config{Entrypoint: []string{"/opt/my app/run"}, Cmd: ArgvHazards, Env: []string{pathEnv}},
		with(Expect{Path: "opt/my app/run", Type: tar.TypeReg, Mode: 0o755, Body: ArgvScript})); err != nil {
		return nil, err
	}
	if err := add("alpine-shell-form", "a shell-form CMD (/bin/sh -c SCRIPT) whose script holds both quote kinds and blanks",
		false, nil,
		v1.Config{Cmd: []string{"/bin/sh", "-c", ShellFormScript}, Env: []string{pathEnv}},
		alpineExpect); err != nil {
		return nil, err
	}
	if err := add("alpine-highid-user", "a process user 100000:100000 owning /home/app, beyond an unprivileged container's 65536 ids",
		true,
		[]Entry{Dir("home/", 0o755), Dir("home/app/", 0o750).Owner(100000, 100000), File("home/app/data", 0o640, "app data\n").Owner(100000, 100000)},
		v1.Config{User: "100000:100000", Cmd: []string{"sleep", "infinity"}, Env: []string{pathEnv}},
		with(Expect{Path: "home/app", Type: tar.TypeDir, Mode: 0o750, Owner: "100000:100000"},
			Expect{Path: "home/app/data", Type: tar.TypeReg, Body: "app data\n", Owner: "100000:100000"})); err != nil {
		return nil, err
	}
	if err := add("alpine-named-user", "USER app (a name, no group): uid, gid and the supplementary groups wheel and audio come from the image's /etc/passwd and /etc/group; no StopSignal",
		false,
		[]Entry{File("etc/passwd", 0o644, NamedUserPasswd), File("etc/group", 0o644, NamedUserGroup), Dir("home/", 0o755), Dir("home/app/", 0o755).Owner(1000, 1000)},
		v1.Config{User: "app", Cmd: []string{"sleep", "infinity"}, Env: []string{pathEnv}, WorkingDir: "/home/app"},
		with(Expect{Path: "home/app", Type: tar.TypeDir, Mode: 0o755, Owner: "1000:1000"})); err != nil {
		return nil, err
	}
	if err := add("alpine-system", "a system container: CMD /sbin/init with Env container=lxc and StopSignal SIGRTMIN+3, which PVE's own OCI import applies",
		false, nil,
		v1.Config{Cmd: []string{"/sbin/init"}, Env: []string{pathEnv, "container=lxc"}, StopSignal: "SIGRTMIN+3"},
		alpineExpect); err != nil {
		return nil, err
	}
	return cases, nil
}
