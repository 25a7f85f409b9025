package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runCLI runs the command line in this process, as main does, and
// returns its exit status, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	status := run(args, out, errf)
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	return status, string(o), string(e)
}

// goInternals are fragments of Go's own error texts, which mean nothing
// to someone typing a command line.
var goInternals = regexp.MustCompile(`strconv\.|ParseInt|ParseBool|Atoi|invalid syntax|json: cannot|invalid character |unexpected end of JSON`)

// TestFlagValuesAreUsageErrors: every bad flag value, on every command
// that has the flag, is exit 2 before anything is read or written, with
// the flag, the bad value and what is accepted, in plain words.
func TestFlagValuesAreUsageErrors(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	t.Setenv("NEXCAGE_STORE", store)
	t.Setenv("NEXCAGE_TEMPLATES", filepath.Join(t.TempDir(), "templates"))
	missing := "oci:" + filepath.Join(t.TempDir(), "nolayout") + ":x"
	notADir := filepath.Join(t.TempDir(), "templates") // does not exist, no trailing /
	for _, tc := range []struct {
		args  []string
		words []string
	}{
		// -o: a directory is an existing one or a path ending in /;
		// anything else is a file, whose suffix must fit the format.
		{[]string{"convert", "-o", "x.tar", "bundle"}, []string{`-o: "x.tar" is not a template name`, ".tar.zst, .tar.gz or .tar.xz", "end a directory with /"}},
		{[]string{"build", "-o", "x.tar", missing}, []string{`-o: "x.tar" is not a template name`, ".tar.zst, .tar.gz or .tar.xz"}},
		{[]string{"convert", "-o", "X.TAR.ZST", "bundle"}, []string{`-o: "X.TAR.ZST" is not a template name`, "in lower case"}},
		{[]string{"convert", "-o", "x.tgz", "bundle"}, []string{`-o: "x.tgz" is not a template name`, "refuses .tgz"}},
		{[]string{"build", "-o", notADir, missing}, []string{`-o: "` + notADir + `" is not a template name`, "end a directory with /"}},
		{[]string{"convert", "-o", notADir, "bundle"}, []string{`-o: "` + notADir + `" is not a template name`, "end a directory with /"}},
		{[]string{"build", "-o", notADir, missing, missing}, []string{`-o: "` + notADir + `" is not a directory, and 2 images need one`, "end it with /"}},
		{[]string{"convert", "--format", "oci-archive", "-o", "x.tar.zst", missing}, []string{`-o: "x.tar.zst" is not an OCI archive name`, ".tar", "end a directory with /"}},
		{[]string{"build", "-o", "x.tar.gz", "--compression", "xz", missing}, []string{`-o: "x.tar.gz" ends in .tar.gz but --compression is xz`}},
		// Enumerations list what they accept.
		{[]string{"convert", "--compression", "lz4", "bundle"}, []string{`--compression: "lz4" is not one of zstd, gzip, xz`}},
		{[]string{"build", "--compression", "lz4", missing}, []string{`--compression: "lz4" is not one of zstd, gzip, xz`}},
		{[]string{"convert", "--format", "zip", "bundle"}, []string{`--format: "zip" is not one of template, oci-archive`}},
		{[]string{"build", "--pull", "sometimes", missing}, []string{`--pull: "sometimes" is not one of missing, always, never`}},
		{[]string{"unpack", "--pull", "sometimes", missing, "b"}, []string{`--pull: "sometimes" is not one of missing, always, never`}},
		{[]string{"create", "--pull", "sometimes", "--name", "web", "--image", missing}, []string{`--pull: "sometimes" is not one of missing, always, never`}},
		{[]string{"deploy", "--unprivileged", "maybe", "t.tar.zst"}, []string{`--unprivileged: "maybe" is not one of 1, 0`}},
		// Numbers say what they are and their range.
		{[]string{"deploy", "--vmid", "abc", "t.tar.zst"}, []string{`--vmid: "abc" is not a whole number; a VMID is a whole number from 100 to 999999999`}},
		{[]string{"deploy", "--vmid", "5", "t.tar.zst"}, []string{`--vmid: 5 is out of range; a VMID is a whole number from 100 to 999999999`}},
		{[]string{"build", "--deploy", "--vmid", "1e3", missing}, []string{`--vmid: "1e3" is not a whole number`}},
		{[]string{"create", "--vmid", "x", "--name", "web", "--image", missing}, []string{`--vmid: "x" is not a whole number`}},
		{[]string{"deploy", "--memory", "8", "t.tar.zst"}, []string{`--memory: 8 is out of range`, "at least 16"}},
		{[]string{"deploy", "--memory", "lots", "t.tar.zst"}, []string{`--memory: "lots" is not a whole number`, "MiB"}},
		{[]string{"deploy", "--swap", "-1", "t.tar.zst"}, []string{`--swap: -1 is out of range`}},
		{[]string{"deploy", "--cores", "9000", "t.tar.zst"}, []string{`--cores: 9000 is out of range`, "1 to 8192"}},
		{[]string{"deploy", "--rootfs-size", "0", "t.tar.zst"}, []string{`--rootfs-size: 0 is out of range`, "GiB"}},
		{[]string{"deploy", "--volume-size", "8G", "t.tar.zst"}, []string{`--volume-size: "8G" is not a whole number`, "GiB"}},
		{[]string{"build", "--jobs", "0", missing}, []string{`--jobs: 0 is out of range`, "1 to 1024"}},
		{[]string{"build", "-j", "many", missing}, []string{`--jobs: "many" is not a whole number`}},
		{[]string{"build", "--level", "40", missing}, []string{`--level: 40 is out of range`, "1 to 22 for zstd"}},
		{[]string{"build", "--level", "15", "-o", "x.tar.gz", missing}, []string{`--level: 15 is out of range for gzip; use 1 to 9`}},
		{[]string{"convert", "--level", "12", "--compression", "xz", "bundle"}, []string{`--level: 12 is out of range for xz; use 1 to 9`}},
		// Sizes, durations, platforms, names.
		{[]string{"build", "--max-layer-size", "12X", missing}, []string{`--max-layer-size: "12X" is not a size`, "64G or 500M"}},
		{[]string{"unpack", "--max-layer-size", "-1G", missing, "b"}, []string{`--max-layer-size: "-1G" is not a size`}},
		{[]string{"build", "--max-layer-size", "9999999999999T", missing}, []string{`--max-layer-size: "9999999999999T" is too large`}},
		{[]string{"pull", "--timeout", "5", missing}, []string{`--timeout: "5" is not a duration`, "30s or 5m"}},
		{[]string{"build", "--timeout", "-1s", missing}, []string{`--timeout: "-1s" is not a duration`}},
		{[]string{"pull", "--platform", "amd64", missing}, []string{`--platform: "amd64" is not os/arch[/variant]`, "linux/amd64"}},
		{[]string{"convert", "--format", "oci-archive", "--platform", "windows/amd64", missing}, []string{`--platform: "windows/amd64"`, "only linux"}},
		{[]string{"deploy", "--hostname", "bad_name", "t.tar.zst"}, []string{`--hostname: "bad_name" is not a valid DNS name`}},
		{[]string{"create", "--name", "bad_name", "--image", missing}, []string{`--name: "bad_name" is not a valid DNS name`}},
		{[]string{"deploy", "--password", "abc", "t.tar.zst"}, []string{`--password: the password is shorter than 5 characters`}},
		{[]string{"deploy", "--mount", "justone", "t.tar.zst"}, []string{`--mount: "justone" is not a bind mount; write SRC:DEST or SRC:DEST:ro`}},
		// build --deploy: the deploy flags are checked before the build,
		// which may be long, and only with --deploy.
		{[]string{"build", "--deploy", "--pve-version", "9.1", missing}, []string{"--pve-version plans without a Proxmox host, so it needs --dry-run"}},
		{[]string{"build", "--deploy", "--password", "secret", "--password-file", "/dev/null", missing}, []string{"--password and --password-file exclude each other"}},
		{[]string{"build", "--deploy", "--mount", "justone", missing}, []string{`--mount: "justone" is not a bind mount`}},
		{[]string{"build", "--deploy", missing, missing}, []string{"--deploy deploys one template", "got 2"}},
		{[]string{"build", "--vmid", "150", missing}, []string{"--vmid needs --deploy"}},
		{[]string{"build", "--dry-run", missing}, []string{"--dry-run needs --deploy"}},
		{[]string{"deploy", "--pve-version", "9.1", "t.tar.zst"}, []string{"--pve-version plans without a Proxmox host, so it needs --dry-run"}},
		// --pve-version is one nexcage knows the config keys of.
		{[]string{"deploy", "--dry-run", "--pve-version", "banana", "t.tar.zst"}, []string{`--pve-version: "banana" is not one of 9.0, 9.1, 9.2`}},
		{[]string{"deploy", "--dry-run", "--pve-version", "8.4", "t.tar.zst"}, []string{`--pve-version: "8.4" is not one of 9.0, 9.1, 9.2`}},
		{[]string{"build", "--deploy", "--dry-run", "--pve-version", "10.0", missing}, []string{`--pve-version: "10.0" is not one of 9.0, 9.1, 9.2`}},
		{[]string{"build", "--max-entries", "0", missing}, []string{`--max-entries: 0 is out of range; --max-entries is a number of entries, at least 1`}},
		{[]string{"unpack", "--max-entries", "-1", missing, "b"}, []string{`--max-entries: -1 is out of range`}},
		{[]string{"build", "--max-entries", "abc", missing}, []string{`--max-entries: "abc" is not a whole number`}},
		{[]string{"build", "--force=maybe", missing}, []string{`--force: "maybe" is not true or false`}},
		{[]string{"list", "--json=2"}, []string{`--json: "2" is not true or false`}},
		{[]string{"list", "--store", "/dev/null"}, []string{`--store: "/dev/null" is a file, not a store directory`}},
		{[]string{"pull", "--store", "/dev/null", missing}, []string{`--store: "/dev/null" is a file`}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			status, _, stderr := runCLI(t, tc.args...)
			if status != exitUsage {
				t.Errorf("exit status %d, want %d; stderr:\n%s", status, exitUsage, stderr)
			}
			for _, w := range tc.words {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if goInternals.MatchString(stderr) {
				t.Errorf("stderr shows Go internals:\n%s", stderr)
			}
			if !strings.Contains(stderr, "usage: nexcage "+tc.args[0]) {
				t.Errorf("stderr lacks the usage line:\n%s", stderr)
			}
		})
	}
	// Refused before anything was written: not even an empty store.
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a refused command line left the store %s behind (%v)", store, err)
	}
}

// TestPasswordNotEchoed: a refused password is not repeated on stderr,
// which ends up in logs.
func TestPasswordNotEchoed(t *testing.T) {
	status, _, stderr := runCLI(t, "deploy", "--password", "s3c", "t.tar.zst")
	if status != exitUsage || strings.Contains(stderr, "s3c") {
		t.Errorf("exit %d, stderr:\n%s", status, stderr)
	}
}

// TestDidYouMean: a mistyped command or flag is a usage error naming the
// closest one; a word close to nothing gets no guess.
func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" = no suggestion at all
	}{
		{[]string{"biuld"}, `unknown command "biuld"; did you mean build?`},
		{[]string{"pul", "x"}, `unknown command "pul"; did you mean pull?`},
		{[]string{"convret"}, `did you mean convert?`},
		{[]string{"help", "dploy"}, `unknown command "dploy"; did you mean deploy?`},
		{[]string{"build", "--compresion", "zstd", "x"}, "unknown flag: --compresion; did you mean --compression?"},
		{[]string{"deploy", "--vmdi", "100", "t"}, "unknown flag: --vmdi; did you mean --vmid?"},
		{[]string{"build", "--templateversion", "1", "x"}, "did you mean --template-version?"},
		{[]string{"--verison"}, `unknown command "--verison"; did you mean --version?`},
		{[]string{"frobnicate"}, ""},
		{[]string{"pull", "--no-such-flag", "x"}, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			status, _, stderr := runCLI(t, tc.args...)
			if status != exitUsage {
				t.Errorf("exit status %d, want 2; stderr:\n%s", status, stderr)
			}
			switch {
			case tc.want == "" && strings.Contains(stderr, "did you mean"):
				t.Errorf("a guess for a word close to nothing:\n%s", stderr)
			case tc.want != "" && !strings.Contains(stderr, tc.want):
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"build", "build", 0}, {"biuld", "build", 1}, {"buld", "build", 1},
		{"builds", "build", 1}, {"compresion", "compression", 1}, {"pull", "list", 4}, {"", "abc", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if got := suggest("jbos", []string{"jobs", "json"}); got != "jobs" {
		t.Errorf("suggest(jbos) = %q, want jobs", got)
	}
	if got := suggest("x", []string{"json", "pull"}); got != "" {
		t.Errorf("suggest(x) = %q, want none", got)
	}
}

// TestNoStoreAsSideEffect: listing a store that does not exist says so
// and creates nothing; a pull that fails before anything is fetched
// leaves no store (nor its parent directories); a pull that works
// creates it.
func TestNoStoreAsSideEffect(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "cache")
	store := filepath.Join(parent, "nexcage", "store")
	t.Setenv("NEXCAGE_STORE", store)
	gone := func(what string) {
		t.Helper()
		if _, err := os.Stat(parent); !os.IsNotExist(err) {
			t.Errorf("%s created %s (%v)", what, parent, err)
		}
	}

	status, stdout, stderr := runCLI(t, "list")
	if status != exitOK || !strings.Contains(stdout, "no images in "+store) || !strings.Contains(stdout, "there is no store yet") {
		t.Errorf("list: exit %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	gone("list")
	status, stdout, _ = runCLI(t, "list", "--json")
	if status != exitOK || !strings.Contains(stdout, `"images": []`) || !strings.Contains(stdout, `"exists": false`) {
		t.Errorf("list --json: exit %d, stdout %q", status, stdout)
	}
	gone("list --json")

	missing := "oci:" + filepath.Join(t.TempDir(), "nolayout") + ":x"
	for _, args := range [][]string{
		{"pull", missing},
		{"pull", "--timeout", "2s", "127.0.0.1:1/x:1"}, // nothing listens on port 1
		{"build", "-q", "-o", t.TempDir() + "/", missing},
		{"unpack", "-q", missing, filepath.Join(t.TempDir(), "b")},
		{"check", "store"},
	} {
		status, _, stderr := runCLI(t, args...)
		if args[0] != "check" && status != exitFailure {
			t.Errorf("%v: exit %d, want 1; stderr:\n%s", args, status, stderr)
		}
		gone(strings.Join(args, " "))
	}

	ref := corpusLayout(t, "whiteouts", "x")
	if status, _, stderr := runCLI(t, "pull", "-q", ref); status != exitOK {
		t.Fatalf("pull: exit %d:\n%s", status, stderr)
	}
	status, stdout, _ = runCLI(t, "list")
	if status != exitOK || !strings.Contains(stdout, ref) {
		t.Errorf("list after a pull: exit %d, stdout %q", status, stdout)
	}
}

// TestTemplateVersionFlag: --template-version names the template;
// build's and convert's old --version still does, with a one-line note;
// nexcage --version is nexcage's own.
func TestTemplateVersionFlag(t *testing.T) {
	t.Setenv("NEXCAGE_STORE", filepath.Join(t.TempDir(), "store"))
	ref := corpusLayout(t, "whiteouts", "x")

	out := t.TempDir()
	status, stdout, stderr := runCLI(t, "build", "-q", "--name", "app", "--template-version", "7", "-o", out+"/", ref)
	if status != exitOK || !strings.Contains(stdout, "-app_7_") || strings.Contains(stderr, "is now") {
		t.Fatalf("--template-version: exit %d, stdout %q, stderr %q", status, stdout, stderr)
	}

	out = t.TempDir()
	status, stdout, stderr = runCLI(t, "build", "-q", "--name", "app", "--version", "8", "-o", out+"/", ref)
	if status != exitOK || !strings.Contains(stdout, "-app_8_") {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	if want := "warning: --version is now --template-version"; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("--version: stderr %q, want one line starting %q", stderr, want)
	}

	status, _, stderr = runCLI(t, "convert", "--version", "9", filepath.Join(t.TempDir(), "nobundle"))
	if status != exitFailure || !strings.Contains(stderr, "--version is now --template-version") {
		t.Errorf("convert --version: exit %d, stderr %q", status, stderr)
	}

	status, _, stderr = runCLI(t, "build", "--version")
	if status != exitUsage || !strings.Contains(stderr, "nexcage --version") {
		t.Errorf("build --version without a value: exit %d, stderr %q", status, stderr)
	}

	for _, c := range []string{"build", "convert"} {
		status, stdout, _ = runCLI(t, c, "--help")
		if status != exitOK || !strings.Contains(stdout, "--template-version") || regexp.MustCompile(`(?m)^\s+--version`).MatchString(stdout) {
			t.Errorf("%s --help: exit %d, shows --version or lacks --template-version:\n%s", c, status, stdout)
		}
	}

	status, stdout, _ = runCLI(t, "--version")
	if status != exitOK || !regexp.MustCompile(`^nexcage \S+ \(go`).MatchString(stdout) {
		t.Errorf("nexcage --version: exit %d, stdout %q", status, stdout)
	}
}
