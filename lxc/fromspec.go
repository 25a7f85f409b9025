package lxc

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// AnnotationStopSignal is where umoci puts the image's STOPSIGNAL.
const AnnotationStopSignal = "org.opencontainers.image.stopSignal"

// MountError names the runtime-spec mount that cannot become a PVE mount.
type MountError struct {
	Index int
	Field string
	Msg   string
}

func (e *MountError) Error() string {
	return fmt.Sprintf("mounts[%d].%s: %s", e.Index, e.Field, e.Msg)
}

// lxcProvided are the mounts every OCI runtime config lists and LXC sets up
// itself; turning them into PVE mount points would break the container.
var lxcProvided = map[string]bool{
	"/proc": true, "/sys": true, "/dev": true, "/dev/pts": true, "/dev/shm": true,
	"/dev/mqueue": true, "/sys/fs/cgroup": true,
}

var lxcProvidedTypes = map[string]bool{
	"proc": true, "sysfs": true, "devpts": true, "mqueue": true, "cgroup": true, "cgroup2": true,
}

// initCommands are what a system container runs as PID 1.
var initCommands = map[string]bool{
	"/sbin/init": true, "/init": true, "/usr/sbin/init": true, "/bin/init": true,
	"/lib/systemd/systemd": true, "/usr/lib/systemd/systemd": true, "/sbin/openrc-init": true,
}

var shells = map[string]bool{"/bin/sh": true, "/bin/bash": true, "sh": true, "bash": true, "/bin/ash": true}

// IsSystemContainer decides whether a process is an init (a system
// container, booted by PVE's default /sbin/init) or an application. A lone
// shell counts as "no opinion" (docker's default CMD for base images), so
// an image whose rootfs has /sbin/init is a system container then.
func IsSystemContainer(args []string, rootfsHasInit bool) bool {
	if len(args) == 0 {
		return rootfsHasInit
	}
	if initCommands[args[0]] {
		return true
	}
	return len(args) == 1 && shells[args[0]] && rootfsHasInit
}

// FromSpec maps a bundle's runtime config to a CT config: hostname,
// mounts, and for application containers the entrypoint, environment,
// working directory, user and stop signal.
func FromSpec(spec *rspec.Spec, system bool) (*Config, error) {
	c := &Config{}
	if spec.Hostname != "" {
		if !ValidDNSName(spec.Hostname) {
			return nil, fmt.Errorf("hostname %q is not a valid DNS name, which PVE requires: fix config.json's hostname", spec.Hostname)
		}
		c.Hostname = spec.Hostname
	}
	if err := mapMounts(c, spec.Mounts); err != nil {
		return nil, err
	}
	if system || spec.Process == nil {
		return c, nil
	}
	p := spec.Process
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("process.args is empty: an application container needs a command to run")
	}
	ep, err := JoinCommand(p.Args)
	if err != nil {
		return nil, fmt.Errorf("process.args: %w", err)
	}
	c.Entrypoint = ep
	c.Cmode = "console"
	for i, e := range p.Env {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("process.env[%d] %q is not NAME=VALUE", i, e)
		}
		if hasControl(k) || hasControl(v) {
			return nil, fmt.Errorf("process.env[%d] (%s) contains control characters, which PVE refuses", i, k)
		}
		if !ValidEnvName(k) {
			// PVE's env pattern refuses the name (APP.MODE, my-var):
			// a plain lxc.environment line keeps it (see Config.For).
			c.Raw = append(c.Raw, Option{"lxc.environment", e})
			continue
		}
		c.Env = append(c.Env, e)
	}
	if p.Cwd != "" && p.Cwd != "/" {
		if !path.IsAbs(p.Cwd) || hasControl(p.Cwd) {
			return nil, fmt.Errorf("process.cwd %q must be an absolute path", p.Cwd)
		}
		c.Raw = append(c.Raw, Option{"lxc.init.cwd", p.Cwd})
	}
	if p.User.UID != 0 {
		c.Raw = append(c.Raw, Option{"lxc.init.uid", strconv.FormatUint(uint64(p.User.UID), 10)})
	}
	if p.User.GID != 0 {
		c.Raw = append(c.Raw, Option{"lxc.init.gid", strconv.FormatUint(uint64(p.User.GID), 10)})
	}
	if sig := spec.Annotations[AnnotationStopSignal]; sig != "" {
		if hasControl(sig) || strings.ContainsAny(sig, " \t") {
			return nil, fmt.Errorf("stop signal %q is not a signal name", sig)
		}
		c.Raw = append(c.Raw, Option{"lxc.signal.halt", sig})
	}
	return c, nil
}

func mapMounts(c *Config, mounts []rspec.Mount) error {
	mp := 0
	for i, m := range mounts {
		if !path.IsAbs(m.Destination) {
			return &MountError{i, "destination", fmt.Sprintf("%q is not an absolute path inside the container", m.Destination)}
		}
		if hasDotDot(m.Destination) || hasControl(m.Destination) || strings.ContainsAny(m.Destination, ", \t") {
			return &MountError{i, "destination", fmt.Sprintf("%q contains '..', a comma, a blank or a control character, which PVE cannot express", m.Destination)}
		}
		dest := path.Clean(m.Destination)
		bind := m.Type == "bind" || hasOption(m.Options, "bind") || hasOption(m.Options, "rbind")
		if lxcProvidedTypes[m.Type] || lxcProvided[dest] {
			continue // LXC mounts these itself (umoci's rootless config binds /sys)
		}
		if _, err := CheckContainerPath(m.Destination); err != nil {
			return &MountError{i, "destination", err.Error()}
		}
		switch {
		case bind:
			if !path.IsAbs(m.Source) {
				return &MountError{i, "source", fmt.Sprintf("bind source %q is relative: PVE bind mounts need an absolute host path", m.Source)}
			}
			if m.Source != path.Clean(m.Source) || hasDotDot(m.Source) || strings.Contains(m.Source, "/./") {
				return &MountError{i, "source", fmt.Sprintf("bind source %q is not a clean path (no '.', '..' or '//'), which PVE requires", m.Source)}
			}
			if strings.ContainsAny(m.Source, ", \t") || hasControl(m.Source) {
				return &MountError{i, "source", fmt.Sprintf("bind source %q contains a comma, a blank or a control character, which PVE cannot express", m.Source)}
			}
			// The same checks deploy applies to a template's bind mounts:
			// whoever wrote the bundle chose this host path.
			if err := CheckTemplateBindSource(m.Source); err != nil {
				return &MountError{i, "source", "bind source " + err.Error()}
			}
			if mp > 255 {
				return &MountError{i, "destination", "more than 256 bind mounts: PVE allows mp0 to mp255"}
			}
			c.MountPoints = append(c.MountPoints, MountPoint{Index: mp, Volume: m.Source, Path: dest, RO: hasOption(m.Options, "ro")})
			mp++
		case m.Type == "tmpfs":
			opts, err := tmpfsOptions(m.Options)
			if err != nil {
				return &MountError{i, "options", err.Error()}
			}
			opts = append(opts, "create=dir")
			c.Raw = append(c.Raw, Option{"lxc.mount.entry", fmt.Sprintf("tmpfs %s tmpfs %s 0 0", strings.TrimPrefix(dest, "/"), strings.Join(opts, ","))})
		default:
			return &MountError{i, "type", fmt.Sprintf("mount type %q cannot be mapped: nexcage maps bind and tmpfs mounts (proc, sysfs, devpts, mqueue and cgroup come from LXC)", m.Type)}
		}
	}
	return nil
}

// tmpfsOptions keeps a tmpfs mount's options, sorted for a stable config:
// each must be on tmpfs's allow-list (an option smuggling a comma, such as
// "size=1m,bind", is one unknown option). Private propagation is LXC's
// default and is dropped.
func tmpfsOptions(opts []string) ([]string, error) {
	var out []string
	for _, o := range opts {
		switch o {
		case "", "private", "rprivate":
			continue
		}
		if err := checkTmpfsOption(o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sort.Strings(out)
	return out, nil
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// JoinCommand renders argv as an entrypoint line that LXC splits back into
// the same argv: it honours single and double quotes, not backslashes.
func JoinCommand(args []string) (string, error) {
	parts := make([]string, len(args))
	for i, a := range args {
		if hasControl(a) {
			return "", fmt.Errorf("argument %d contains control characters, which PVE refuses", i)
		}
		switch {
		case a != "" && !strings.ContainsAny(a, " \t'\"\\$`|&;<>(){}*?[]#~"):
			parts[i] = a
		case !strings.Contains(a, "'"):
			parts[i] = "'" + a + "'"
		case !strings.Contains(a, `"`):
			parts[i] = `"` + a + `"`
		default:
			return "", fmt.Errorf("argument %d contains both kinds of quotes, which an LXC init command cannot express", i)
		}
	}
	return strings.Join(parts, " "), nil
}

// SplitCommand is JoinCommand's inverse, as LXC splits lxc.init.cmd. It
// works on bytes: quotes and blanks are ASCII, and arguments need not be
// valid UTF-8.
func SplitCommand(s string) []string {
	var out []string
	var cur []byte
	inArg := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur = append(cur, c)
			}
		case c == '\'' || c == '"':
			quote, inArg = c, true
		case c == ' ' || c == '\t':
			if inArg {
				out = append(out, string(cur))
				cur = cur[:0]
				inArg = false
			}
		default:
			cur = append(cur, c)
			inArg = true
		}
	}
	if inArg {
		out = append(out, string(cur))
	}
	return out
}

// ValidDNSName is PVE's check for hostnames.
func ValidDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
