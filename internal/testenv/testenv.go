// Package testenv gives nexcage's tests the real external tools they drive
// (docker-registry, skopeo, umoci, lxc, ...) and a uniform policy for when
// those tools are absent: skip on a developer's machine, fail under
// `make test`, which must never pass by quietly skipping.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// EnvRequireTools, when true, turns a missing tool into a failure.
	EnvRequireTools = "NEXCAGE_REQUIRE_TOOLS"
	// EnvRequireRoot, when true, turns "not root" into a failure.
	EnvRequireRoot = "NEXCAGE_REQUIRE_ROOT"

	installHint = "sudo scripts/install-deps.sh"

	// DefaultRunTimeout bounds every Run; a hung tool should fail its test
	// with the command line, not stall the whole binary until -timeout.
	DefaultRunTimeout = 5 * time.Minute

	// deadlineGrace is kept back from the test binary's deadline so that a
	// command we kill still leaves time to report what it printed.
	deadlineGrace = 10 * time.Second

	// maxReportedOutput keeps failure messages readable when a tool floods.
	maxReportedOutput = 64 << 10
)

// toolPackages names the Debian package behind each tool, so a skip message
// says exactly what to install.
var toolPackages = map[string]string{
	"docker-registry": "docker-registry",
	"skopeo":          "skopeo",
	"umoci":           "umoci",
	"buildah":         "buildah",
	"lxc-start":       "lxc",
	"lxc-usernsexec":  "lxc",
	"lxc-attach":      "lxc",
	"lxc-create":      "lxc",
	"lxc-destroy":     "lxc",
	"lxc-stop":        "lxc",
	"lxc-info":        "lxc",
	"newuidmap":       "uidmap",
	"newgidmap":       "uidmap",
	"pigz":            "pigz",
	"zstd":            "zstd",
	"xz":              "xz-utils",
	"tar":             "tar",
	"debootstrap":     "debootstrap",
	"dpkg-deb":        "dpkg",
	"lintian":         "lintian",
	"time":            "time",
	"mandoc":          "mandoc",
	"groff":           "groff-base",
	"zsh":             "zsh",
	"fish":            "fish",
}

// sbinDirs are searched after PATH because a non-root user's PATH usually
// lacks them, yet debootstrap and friends live there and run fine.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

func envTrue(name string) bool {
	v, err := strconv.ParseBool(strings.TrimSpace(os.Getenv(name)))
	return err == nil && v
}

// skipOrFail lets CI insist on an environment that developers may lack.
func skipOrFail(t testing.TB, strictEnv, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if envTrue(strictEnv) {
		t.Fatalf("%s (%s is set, so this is a failure, not a skip)", msg, strictEnv)
	}
	t.Skip(msg)
}

// LookTool returns the absolute path of a command, searching PATH and then
// the sbin directories, without involving a test.
func LookTool(name string) (string, error) {
	if strings.ContainsRune(name, filepath.Separator) {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", err
		}
		return filepath.Abs(p)
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range sbinDirs {
		if p2, err2 := exec.LookPath(filepath.Join(dir, name)); err2 == nil {
			return p2, nil
		}
	}
	return "", err
}

// RequireTool returns the absolute path of a command, or skips the test
// saying which tool is missing and how to install it. Under
// NEXCAGE_REQUIRE_TOOLS=1 (set by `make test`) it fails instead.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := LookTool(name)
	if err == nil {
		return p
	}
	pkg := toolPackages[filepath.Base(name)]
	if pkg == "" {
		pkg = "the package providing it"
	} else {
		pkg = "Debian package " + pkg
	}
	skipOrFail(t, EnvRequireTools, "required tool %q not found (%v); it comes from %s: run `%s`",
		name, err, pkg, installHint)
	return ""
}

// RequireRoot skips the test, or fails it under NEXCAGE_REQUIRE_ROOT=1,
// when the process is not uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		skipOrFail(t, EnvRequireRoot, "test needs root (mounts, chown to mapped ids, lxc); running as uid %d", uid)
	}
}

// Run runs a command with DefaultRunTimeout and returns its combined
// output, failing the test with the command line and output otherwise.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return RunTimeout(t, DefaultRunTimeout, name, args...)
}

// RunTimeout is Run with an explicit bound, for tools such as debootstrap
// that legitimately take longer than DefaultRunTimeout.
func RunTimeout(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, timeout, nil, name, args...)
	if err != nil {
		t.Fatalf("%s: %v\n--- output ---\n%s", quoteCommand(name, args), err, clip(out))
	}
	return out
}

// Output runs cmd and returns what it wrote on stdout and on stderr and
// its exit status (-1 when a signal ended it); only a command that could
// not run at all fails t.
func Output(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", quoteCommand(cmd.Path, cmd.Args[1:]), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// runCmd never calls Fatal, so callers can decide what a failure means.
func runCmd(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	timeout = clampToDeadline(t, timeout)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = nil
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.SysProcAttr = childProcAttr()
	// Kill the whole process group: tools like lxc-usernsexec fork helpers
	// that would otherwise survive the timeout and keep the output pipe
	// open.
	cmd.Cancel = func() error { return killTree(cmd.Process) }
	// If a grandchild escaped the group and holds the pipe, stop waiting
	// for it rather than hang.
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("killed after %v (timeout %v): %w", time.Since(start).Round(time.Millisecond), timeout, err)
		} else {
			err = fmt.Errorf("canceled (test ended): %w", err)
		}
	}
	return buf.String(), err
}

// clampToDeadline keeps a command's timeout inside `go test -timeout`, so a
// hung tool yields a readable failure instead of the binary's panic dump.
func clampToDeadline(t testing.TB, timeout time.Duration) time.Duration {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return timeout
	}
	deadline, ok := d.Deadline()
	if !ok {
		return timeout
	}
	left := time.Until(deadline) - deadlineGrace
	if left < time.Second {
		left = time.Second
	}
	return min(timeout, left)
}

func quoteCommand(name string, args []string) string {
	parts := make([]string, 0, len(args)+1)
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// clip keeps the end of long output: the error is almost always at the end.
func clip(s string) string {
	if len(s) <= maxReportedOutput {
		return s
	}
	return fmt.Sprintf("[... %d bytes elided ...]\n%s", len(s)-maxReportedOutput, s[len(s)-maxReportedOutput:])
}

const systemPolicy = "/etc/containers/policy.json"

// SkopeoCopy runs `skopeo copy` with TLS verification off on both ends,
// since test registries are plain HTTP on loopback. src and dst are skopeo
// transport references such as "oci:/dir:tag" or
// "docker://127.0.0.1:5000/repo:tag". extraArgs go just before src (for
// example "--format", "oci"). It returns skopeo's output.
func SkopeoCopy(t testing.TB, src, dst string, extraArgs ...string) string {
	t.Helper()
	skopeo := RequireTool(t, "skopeo")
	var args []string
	// skopeo refuses to run without a signature policy, and a bare machine
	// (containers-common not installed) has none.
	if _, err := os.Stat(systemPolicy); err != nil {
		policy := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`+"\n"), 0o644); err != nil {
			t.Fatalf("write skopeo policy: %v", err)
		}
		args = append(args, "--policy", policy)
	}
	args = append(args, "copy", "--dest-tls-verify=false", "--src-tls-verify=false")
	args = append(args, extraArgs...)
	args = append(args, src, dst)
	return Run(t, skopeo, args...)
}

// Must fails the test at once on the error of a step that sets a test up
// (a file written, a directory made): what follows would only fail in a
// less telling way.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
