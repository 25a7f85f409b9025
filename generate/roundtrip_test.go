package generate_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/template"
)

// TestTemplateRoundTrip is the proof: for every image of the
// corpus, build → template → generate --template → convert gives the very
// same template, .conf and .json.
func TestTemplateRoundTrip(t *testing.T) {
	testenv.RequireRoot(t) // owners, device nodes and security.capability
	for _, c := range cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			opts := convert.Options{Privileged: true, ToolVersion: "test"}
			built := build(t, c, opts)
			bundle, res := generateBundle(t, generate.Options{Template: built.Template})
			validateConfig(t, filepath.Join(bundle, "config.json"))
			if len(res.Sidecars) != 2 {
				t.Errorf("sidecars read: %v, want the .json and the .conf", res.Sidecars)
			}
			if r := res.ConvertRecipe; r == nil || *r != (template.Recipe{Privileged: true}) {
				t.Errorf("convert recipe %+v, want privileged alone (the sidecar's options)", r)
			}
			again := convertBundle(t, bundle, opts)
			sameTemplate(t, built, again)
		})
	}
}

// TestTemplateRoundTripOptions: other compressions, an unprivileged
// template with squashed ids, and a name given with --name and --template-version.
func TestTemplateRoundTripOptions(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name string
		opts convert.Options
	}{
		{"alpine-app", convert.Options{Compression: template.Gzip, ToolVersion: "test"}},
		{"alpine-amd64", convert.Options{Compression: template.XZ, Level: 2, ToolVersion: "test"}},
		{"ids", convert.Options{SquashHighIDs: true, Name: "web", Version: "2.1", ToolVersion: "test"}},
	} {
		t.Run(tc.name+"-"+string(tc.opts.Compression), func(t *testing.T) {
			built := build(t, corpusCase(t, tc.name), tc.opts)
			bundle, res := generateBundle(t, generate.Options{Template: built.Template})
			want := map[string]template.Recipe{"alpine-app": {Compression: "gzip"}, "alpine-amd64": {Compression: "xz", Level: 2}, "ids": {SquashHighIDs: true, Name: "web", Version: "2.1"}}[tc.name]
			if got := res.ConvertRecipe; got == nil || *got != want {
				t.Errorf("convert recipe %+v, want %+v", got, want)
			}
			sameTemplate(t, built, convertBundle(t, bundle, tc.opts))
		})
	}
}

// TestTemplateRoundTripRootless: the rootless extraction (owners in
// user.rootlesscontainers, the caller mapped to root in config.json)
// converts to the same template too. "ids" and "devices" are left out:
// a symlink's owner and a device node cannot be kept without root.
func TestTemplateRoundTripRootless(t *testing.T) {
	testenv.RequireRoot(t) // to build templates with foreign owners at all
	for _, name := range []string{"modes", "alpine-app", "hardlink-lower", "whiteouts"} {
		t.Run(name, func(t *testing.T) {
			opts := convert.Options{Privileged: true, ToolVersion: "test"}
			built := build(t, corpusCase(t, name), opts)
			gopts := generate.Options{Template: built.Template}
			generate.ForceRootless(&gopts, true)
			bundle, res := generateBundle(t, gopts)
			if !res.Rootless {
				t.Error("the result does not say the bundle is rootless")
			}
			b, err := convert.LoadBundle(bundle)
			if err != nil {
				t.Fatal(err)
			}
			if l := b.Spec.Linux; l == nil || len(l.UIDMappings) != 1 || l.UIDMappings[0].ContainerID != 0 || l.UIDMappings[0].HostID != uint32(os.Geteuid()) {
				t.Errorf("config.json does not map the caller to root: %+v", b.Spec.Linux)
			}
			validateConfig(t, filepath.Join(bundle, "config.json"))
			sameTemplate(t, built, convertBundle(t, bundle, opts))
		})
	}
}

// TestTemplateWithoutManifest: with only the .conf beside the template,
// process, environment, user, working directory and mounts come from it,
// and the template's bytes still come back.
func TestTemplateWithoutManifest(t *testing.T) {
	testenv.RequireRoot(t)
	opts := convert.Options{Name: "app", Version: "1", ToolVersion: "test"}
	built := build(t, corpusCase(t, "alpine-app"), opts)
	os.Remove(built.SidecarJSON)
	bundle, res := generateBundle(t, generate.Options{Template: built.Template})
	if len(res.Sidecars) != 1 || !strings.HasSuffix(res.Sidecars[0], ".conf") {
		t.Errorf("sidecars read: %v, want the .conf alone", res.Sidecars)
	}
	again := convertBundle(t, bundle, opts)
	if again.Sidecar.Template.SHA256 != built.Sidecar.Template.SHA256 {
		testbundle.DiffMembers(t, built.Template, again.Template)
	}
	conf := string(readFile(t, again.Config))
	for _, line := range []string{"entrypoint: /app/run.sh sleep infinity", "lxc.init.cwd: /app", "lxc.init.uid: 1000", "lxc.environment.runtime: GREETING=hello world", "lxc.signal.halt: SIGTERM"} {
		if !strings.Contains(conf, line+"\n") {
			t.Errorf("the conf lacks %q:\n%s", line, conf)
		}
	}
}

// TestTemplateWithoutSidecars: a bare template (a PVE one, say) gets the
// default process: its init when it has one.
func TestTemplateWithoutSidecars(t *testing.T) {
	testenv.RequireRoot(t)
	built := build(t, corpusCase(t, "alpine-amd64"), convert.Options{ToolVersion: "test"})
	os.Remove(built.SidecarJSON)
	os.Remove(built.Config)
	bundle, res := generateBundle(t, generate.Options{Template: built.Template, Spec: generate.SpecOptions{Hostname: "box", Env: []string{"TZ=UTC"}}})
	if len(res.Sidecars) != 0 || strings.Join(res.Process, " ") != "/sbin/init" || res.Arch != "amd64" {
		t.Errorf("sidecars %v, process %v, arch %q; want none, /sbin/init (alpine has it), amd64", res.Sidecars, res.Process, res.Arch)
	}
	validateConfig(t, filepath.Join(bundle, "config.json"))
	again := convertBundle(t, bundle, convert.Options{Name: "alpine", ToolVersion: "test"})
	if again.Sidecar.Template.SHA256 != built.Sidecar.Template.SHA256 {
		testbundle.DiffMembers(t, built.Template, again.Template)
	}
	if conf := string(readFile(t, again.Config)); !strings.Contains(conf, "hostname: box\n") || strings.Contains(conf, "entrypoint") {
		t.Errorf("the conf of a system container with --hostname box:\n%s", conf)
	}
}

// TestTemplateRoundTripDateVersion: an image tagged latest without a
// version label is named by its creation date, which the manifest does
// not keep; generate gives it back from the template's name.
func TestTemplateRoundTripDateVersion(t *testing.T) {
	testenv.RequireRoot(t)
	opts := convert.Options{ToolVersion: "test"}
	built := buildAs(t, corpusCase(t, "alpine-amd64"), "latest", opts)
	if !strings.Contains(filepath.Base(built.Template), "_20231114_") {
		t.Fatalf("template %s is not named by the image's creation date", built.Template)
	}
	bundle, _ := generateBundle(t, generate.Options{Template: built.Template})
	sameTemplate(t, built, convertBundle(t, bundle, opts))
}
