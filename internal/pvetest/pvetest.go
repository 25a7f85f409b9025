// Package pvetest does what a Proxmox VE host does with a template, with
// the real tools underneath: it extracts templates with PVE's exact tar
// command (through lxc-usernsexec for unprivileged containers), turns a CT
// config into LXC configuration the way pve-container does, and starts the
// result with lxc-start. Tests and the PVE stand-ins under testdata/pve use
// it; Proxmox itself cannot run here.
package pvetest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nexcage/nexcage/lxc"
)

// IDMapBase is PVE's default first host id for unprivileged containers.
const IDMapBase = 100000

// ExtractCommand is PVE's extraction of a template (proxmox.md §2), with
// the decompression flag chosen from the file suffix.
func ExtractCommand(template, rootdir string, unprivileged bool) ([]string, error) {
	var z string
	lower := strings.ToLower(template)
	switch {
	case strings.HasSuffix(lower, ".tar.zst"):
		z = "--zstd"
	case strings.HasSuffix(lower, ".tar.gz"):
		z = "-z"
	case strings.HasSuffix(lower, ".tar.xz"):
		z = "-J"
	case strings.HasSuffix(lower, ".tar.bz2"):
		z = "-j"
	case strings.HasSuffix(lower, ".tar"):
		// PVE 9.1 takes plain .tar templates (proxmox.md §1): no
		// decompression flag.
	default:
		return nil, fmt.Errorf("unable to parse directory volume name 'vztmpl/%s'", filepath.Base(template))
	}
	argv := []string{"tar", "xpf", "-"}
	if z != "" {
		argv = append(argv, z)
	}
	argv = append(argv, "--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls",
		"--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
		"--warning=no-file-ignored", "--warning=no-xattr-write",
		"-C", rootdir, "--skip-old-files", "--anchored", "--exclude", "./dev/*")
	if unprivileged {
		m := fmt.Sprintf("%d:65536", IDMapBase)
		argv = append([]string{"lxc-usernsexec", "-m", "u:0:" + m, "-m", "g:0:" + m, "--"}, argv...)
	}
	return argv, nil
}

// Extract unpacks a template into rootdir as PVE does. For unprivileged
// containers rootdir is first given to the mapped root, as PVE does before
// it runs tar inside the user namespace.
func Extract(ctx context.Context, template, rootdir string, unprivileged bool) ([]byte, error) {
	argv, err := ExtractCommand(template, rootdir, unprivileged)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(rootdir, 0o755); err != nil {
		return nil, err
	}
	if unprivileged {
		if err := os.Chown(rootdir, IDMapBase, IDMapBase); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(template)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return out, nil
}

// LXCConfig renders the LXC configuration pve-container generates for a CT
// config (PVE::LXC::update_lxc_config), reduced to what runs without a
// PVE host: no network bridge, mount points as bind mount entries.
func LXCConfig(c *lxc.Config, name, rootfs string) (string, error) {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	line("lxc.uts.name", cmp.Or(c.Hostname, name))
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "armhf": "armv7l", "riscv64": "riscv64"}[c.Arch]
	if arch == "" {
		return "", fmt.Errorf("arch %q is not one PVE knows", c.Arch)
	}
	line("lxc.arch", arch)
	common := "/usr/share/lxc/config/common.conf"
	if c.OSType != "" && c.OSType != "unmanaged" {
		if p := "/usr/share/lxc/config/" + c.OSType + ".common.conf"; fileExists(p) {
			common = p
		}
	}
	line("lxc.include", common)
	if c.Unprivileged {
		line("lxc.include", "/usr/share/lxc/config/userns.conf")
		line("lxc.idmap", fmt.Sprintf("u 0 %d 65536", IDMapBase))
		line("lxc.idmap", fmt.Sprintf("g 0 %d 65536", IDMapBase))
	}
	line("lxc.rootfs.path", "dir:"+rootfs)
	line("lxc.net.0.type", "empty")
	for _, m := range c.MountPoints {
		if !m.IsBind() {
			return "", fmt.Errorf("%s: storage-backed volumes need a PVE storage", m.Key())
		}
		opts := "rbind,create=dir"
		if m.RO {
			opts += ",ro"
		}
		line("lxc.mount.entry", fmt.Sprintf("%s %s none %s 0 0", m.Volume, strings.TrimPrefix(m.Path, "/"), opts))
	}
	if c.Entrypoint != "" {
		line("lxc.init.cmd", c.Entrypoint)
	}
	// PVE writes the env key as lxc.environment.runtime; LXC before 6 knows
	// only lxc.environment, which reaches init the same way.
	for _, e := range c.Env {
		line("lxc.environment", e)
	}
	for _, o := range c.Raw {
		line(o.Key, o.Value)
	}
	return b.String(), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Container is an LXC container under a private lxcpath.
type Container struct {
	LXCPath, Name string
}

// Create writes the container's config and extracts the template into its
// rootfs, as `pct create` does.
func Create(ctx context.Context, lxcpath, name, template string, c *lxc.Config) (*Container, error) {
	dir := filepath.Join(lxcpath, name)
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The mapped root must reach the rootfs, as under /var/lib/lxc.
	os.Chmod(lxcpath, 0o755)
	os.Chmod(dir, 0o755)
	if _, err := Extract(ctx, template, rootfs, c.Unprivileged); err != nil {
		return nil, err
	}
	cfg, err := LXCConfig(c, name, rootfs)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return &Container{LXCPath: lxcpath, Name: name}, nil
}

func (c *Container) run(ctx context.Context, timeout time.Duration, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv := append([]string{"-P", c.LXCPath, "-n", c.Name}, args...)
	out, err := exec.CommandContext(ctx, tool, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", tool, strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// Start starts the container in the background and waits until it runs.
func (c *Container) Start(ctx context.Context) error {
	logFile := filepath.Join(c.LXCPath, c.Name, "start.log")
	if _, err := c.run(ctx, 30*time.Second, "lxc-start", "-d", "-l", "INFO", "-o", logFile); err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("%w\n%s", err, tail(string(log), 2000))
	}
	_, err := c.run(ctx, 30*time.Second, "lxc-wait", "-s", "RUNNING", "-t", "20")
	return err
}

// Attach runs a command inside the running container.
func (c *Container) Attach(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, 60*time.Second, "lxc-attach", append([]string{"--clear-env", "--"}, args...)...)
}

// State is lxc-info's state line (RUNNING, STOPPED).
func (c *Container) State(ctx context.Context) string {
	out, err := c.run(ctx, 10*time.Second, "lxc-info", "-s", "-H")
	if err != nil {
		return "UNKNOWN"
	}
	return strings.TrimSpace(out)
}

// Stop kills the container (it may not be running).
func (c *Container) Stop(ctx context.Context) error {
	if c.State(ctx) == "STOPPED" {
		return nil
	}
	_, err := c.run(ctx, 30*time.Second, "lxc-stop", "-k")
	return err
}

// Shutdown stops the container cleanly, as `pct shutdown` does: LXC sends
// init the config's lxc.signal.halt (SIGPWR by default) and waits up to
// timeout for it to exit, then kills it.
func (c *Container) Shutdown(ctx context.Context, timeout time.Duration) error {
	if c.State(ctx) == "STOPPED" {
		return nil
	}
	_, err := c.run(ctx, timeout+30*time.Second, "lxc-stop", "-t", strconv.Itoa(int(timeout.Seconds())))
	return err
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
