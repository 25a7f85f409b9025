package lxc

import (
	"fmt"
	"path"
	"slices"
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

// EnvError names an environment variable no CT config can carry.
type EnvError struct {
	Index int
	Name  string
	Msg   string
}

func (e *EnvError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("environment variable %s %s", e.Name, e.Msg)
	}
	if e.Name == "" {
		return fmt.Sprintf("process.env[%d] %s", e.Index, e.Msg)
	}
	return fmt.Sprintf("process.env[%d] (%s) %s", e.Index, e.Name, e.Msg)
}

// envNameMsg is why a name PVE's env pattern refuses (APP.MODE, my-var)
// is refused: lxc.environment.runtime does not take it (the oracle's
// pve-container 6.0.18 and later reject it), and plain lxc.environment
// would also reach the hooks PVE runs as root on the host.
const envNameMsg = "has a name PVE's env pattern (letters, digits, '_') refuses, and the only other way, plain lxc.environment, also reaches the hooks PVE runs as root on the host"

// CheckEnv checks one NAME=VALUE for a lxc.environment.runtime line.
func CheckEnv(i int, e string) error {
	k, v, ok := strings.Cut(e, "=")
	if !ok || k == "" || strings.ContainsAny(k, " \t") {
		return &EnvError{i, "", fmt.Sprintf("%q is not NAME=VALUE", e)}
	}
	// The value takes what PVE's env pattern takes (CheckEnvVar): no
	// control characters but tab.
	if hasControl(k) || controlRE.MatchString(v) {
		return &EnvError{i, k, "contains control characters (other than tab), which PVE refuses"}
	}
	// PVE's config parser and LXC's both trim blanks off the end of a
	// line, and neither has a quoting for them: the variable would
	// arrive shorter than the image says.
	if strings.TrimRight(v, " \t") != v {
		return &EnvError{i, k, "ends in a blank, which PVE and LXC both trim off a config line (no quoting keeps it)"}
	}
	return nil
}

// FromSpec maps a bundle's runtime config to a CT config: hostname,
// mounts, the environment, working directory, user and stop signal, and
// for application containers the entrypoint. A system container keeps
// PVE's default init, but gets the rest as PVE's own OCI import gives it
// (PVE::LXC::Create::restore_oci_archive applies Env, User, WorkingDir
// and StopSignal whatever the command).
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
	if spec.Process == nil {
		return c, nil
	}
	p := spec.Process
	if !system {
		if len(p.Args) == 0 {
			return nil, fmt.Errorf("process.args is empty: an application container needs a command to run")
		}
		ep, _, err := InitCommand(p.Args)
		if err != nil {
			return nil, fmt.Errorf("process.args: %w", err)
		}
		c.Entrypoint = ep
		c.Cmode = "console"
	}
	for i, e := range p.Env {
		if err := CheckEnv(i, e); err != nil {
			return nil, err
		}
		if k, _, _ := strings.Cut(e, "="); !ValidEnvName(k) {
			return nil, &EnvError{i, k, envNameMsg}
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
	if !system && p.User.UID != 0 && len(p.User.AdditionalGids) > 0 {
		// umoci resolved a named user's supplementary groups from the
		// rootfs's /etc/group, as PVE's OCI import does (resolve_oci_user):
		// LXC takes them comma-separated. Not for root, which needs none
		// (and umoci resolves an image without USER as root, with root's
		// groups), nor for a system container, whose init sets its own.
		gids := make([]string, len(p.User.AdditionalGids))
		for i, g := range p.User.AdditionalGids {
			gids[i] = strconv.FormatUint(uint64(g), 10)
		}
		c.Raw = append(c.Raw, Option{"lxc.init.groups", strings.Join(gids, ",")})
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
		bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
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
			c.MountPoints = append(c.MountPoints, MountPoint{Index: mp, Volume: m.Source, Path: dest, RO: slices.Contains(m.Options, "ro")})
			mp++
		case m.Type == "tmpfs":
			opts, err := tmpfsOptions(m.Options)
			if err != nil {
				return &MountError{i, "options", err.Error()}
			}
			// No create=dir: LXC would create a missing mount point
			// before pivot_root, following the rootfs's symlinks on the
			// host. convert puts the directory in the rootfs instead.
			if len(opts) == 0 {
				opts = []string{"rw"} // the entry needs an options field
			}
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
