package generate

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// SpecFlags are the process and container settings of `nexcage generate`
// as given on the command line; the zero value changes nothing. They
// override what the rootfs or the template's sidecars say.
type SpecFlags struct {
	// Args is the process's argv (--args, repeatable).
	Args []string
	// Cmd is the process as one command line, split as LXC splits
	// lxc.init.cmd (single and double quotes, no backslashes).
	Cmd string
	// Env adds or replaces NAME=VALUE variables (--env, repeatable).
	Env []string
	Cwd string
	// User is UID[:GID], numeric.
	User     string
	Hostname string
	// Mounts are type=bind,src=/host,dst=/ct[,ro] or
	// type=tmpfs,dst=/ct[,size=64m][,mode=1777][,ro] (--mount, repeatable).
	Mounts []string
	// Memory is the memory limit: bytes, or a number with k, m, g or t.
	Memory string
	// CPUs is a number of CPUs (a fraction is a share of one).
	CPUs string
	// RootPath is root.path for `generate spec` (--rootfs there).
	RootPath string
	// Arch overrides the architecture read from /bin/sh (Debian or OCI
	// names: amd64, arm64, i386, armhf, riscv64).
	Arch string
}

// FlagError is a command-line value nexcage cannot use: a usage error
// (exit status 2) that names the flag and the fix.
type FlagError struct {
	Flag  string // without dashes; "" when the flags do not fit together
	Value string
	Msg   string
}

func (e *FlagError) Error() string {
	if e.Flag == "" {
		return e.Msg
	}
	if e.Value == "" {
		return fmt.Sprintf("--%s: %s", e.Flag, e.Msg)
	}
	return fmt.Sprintf("--%s %s: %s", e.Flag, quoteArg(e.Value), e.Msg)
}

func quoteArg(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'\\$`") {
		return strconv.Quote(s)
	}
	return s
}

func flagErr(flag, value, format string, args ...any) error {
	return &FlagError{Flag: flag, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// overrides are SpecFlags checked and parsed.
type overrides struct {
	args          []string // nil: unchanged
	env           []string
	cwd           string
	user          *rspec.User
	hostname      string
	mounts        []rspec.Mount
	memory        *int64
	cpuQuota      *int64
	arch, variant string
}

var envName = regexp.MustCompile(`^[^=\s[:cntrl:]]+$`)

// parse checks every flag on its own, with convert's rules, so that a
// value convert could not map is refused here, naming the flag.
func (f SpecFlags) parse() (*overrides, error) {
	o := &overrides{}
	if len(f.Args) > 0 && f.Cmd != "" {
		return nil, flagErr("cmd", f.Cmd, "--args and --cmd both set the process: give one of them")
	}
	switch {
	case len(f.Args) > 0:
		o.args = f.Args
	case f.Cmd != "":
		var err error
		if o.args, err = lxc.SplitWordsStrict(f.Cmd); err != nil {
			return nil, flagErr("cmd", f.Cmd, "%v: close it, or give the arguments with --args", err)
		}
		if len(o.args) == 0 {
			return nil, flagErr("cmd", f.Cmd, "the command line is empty: write e.g. --cmd '/usr/bin/app --port 80'")
		}
	}
	for i, a := range o.args {
		if _, err := lxc.JoinCommand([]string{a}); err != nil {
			flag, val := "args", a
			if f.Cmd != "" {
				flag, val = "cmd", f.Cmd
			}
			return nil, flagErr(flag, val, "argument %d: %s", i, strings.TrimPrefix(err.Error(), "argument 0 "))
		}
	}
	if o.args != nil && o.args[0] == "" {
		return nil, flagErr("args", "", "the program (the first argument) is empty")
	}
	for _, e := range f.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return nil, flagErr("env", e, "write NAME=VALUE (a name without blanks or '=')")
		}
		if hasControl(e) {
			return nil, flagErr("env", e, "contains control characters, which PVE refuses")
		}
		o.env = append(o.env, e)
	}
	if f.Cwd != "" {
		if !path.IsAbs(f.Cwd) || hasControl(f.Cwd) {
			return nil, flagErr("cwd", f.Cwd, "the working directory must be an absolute path inside the container, e.g. /app")
		}
		o.cwd = path.Clean(f.Cwd)
	}
	if f.User != "" {
		u, err := parseUser(f.User)
		if err != nil {
			return nil, err
		}
		o.user = u
	}
	if f.Hostname != "" {
		if !lxc.ValidDNSName(f.Hostname) {
			return nil, flagErr("hostname", f.Hostname, "not a valid DNS name, which PVE requires: letters, digits and '-', dot-separated labels of at most 63 characters")
		}
		o.hostname = f.Hostname
	}
	seen := map[string]int{}
	for i, raw := range f.Mounts {
		m, err := parseMount(raw)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[m.Destination]; dup {
			return nil, flagErr("mount", raw, "%s is already the destination of mount %d (%s): give each destination once", m.Destination, j+1, f.Mounts[j])
		}
		seen[m.Destination] = i
		o.mounts = append(o.mounts, m)
	}
	if f.Memory != "" {
		n, err := parseMemory(f.Memory)
		if err != nil {
			return nil, err
		}
		o.memory = &n
	}
	if f.CPUs != "" {
		q, err := parseCPUs(f.CPUs)
		if err != nil {
			return nil, err
		}
		o.cpuQuota = &q
	}
	if f.Arch != "" {
		a, v, err := ociArch(f.Arch)
		if err != nil {
			return nil, flagErr("arch", f.Arch, "%v", err)
		}
		o.arch, o.variant = a, v
	}
	return o, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

func parseUser(s string) (*rspec.User, error) {
	us, gs, hasGID := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return nil, flagErr("user", s, "write numeric UID[:GID], e.g. 1000:1000 (the runtime config holds numbers, not names)")
	}
	u := &rspec.User{UID: uint32(uid)}
	if hasGID {
		gid, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return nil, flagErr("user", s, "write numeric UID[:GID], e.g. 1000:1000 (the runtime config holds numbers, not names)")
		}
		u.GID = uint32(gid)
	}
	return u, nil
}

// parseMount reads type=bind,src=/host,dst=/ct[,ro] and
// type=tmpfs,dst=/ct[,size=...][,mode=...][,ro], and checks the result
// with the very rules convert maps mounts by.
func parseMount(raw string) (rspec.Mount, error) {
	var typ, src, dst string
	var ro bool
	var tmpfsOpts []string
	for _, part := range strings.Split(raw, ",") {
		k, v, hasValue := strings.Cut(part, "=")
		switch strings.ToLower(k) {
		case "type":
			typ = v
		case "src", "source":
			src = v
		case "dst", "destination", "target", "dest":
			dst = v
		case "ro", "readonly":
			if hasValue && v != "1" && v != "true" {
				return rspec.Mount{}, flagErr("mount", raw, "%s takes no value (or 1/true): write ro", k)
			}
			ro = true
		case "size":
			if !regexp.MustCompile(`^[0-9]+[kKmMgG%]?$`).MatchString(v) {
				return rspec.Mount{}, flagErr("mount", raw, "size=%s: write bytes or a number with k, m, g or %%, e.g. size=64m", v)
			}
			tmpfsOpts = append(tmpfsOpts, "size="+strings.ToLower(v))
		case "mode":
			if _, err := strconv.ParseUint(v, 8, 32); err != nil || len(v) > 4 {
				return rspec.Mount{}, flagErr("mount", raw, "mode=%s: write octal permission bits, e.g. mode=1777", v)
			}
			tmpfsOpts = append(tmpfsOpts, "mode="+v)
		case "":
			return rspec.Mount{}, flagErr("mount", raw, "empty field: write type=bind,src=/host/dir,dst=/in/container[,ro] or type=tmpfs,dst=/run[,size=64m]")
		default:
			return rspec.Mount{}, flagErr("mount", raw, "unknown field %q: the fields are type, src, dst, ro, and for tmpfs size and mode", k)
		}
	}
	if dst == "" {
		return rspec.Mount{}, flagErr("mount", raw, "no dst=: say where the mount goes inside the container, e.g. dst=/data")
	}
	var m rspec.Mount
	switch typ {
	case "bind":
		if src == "" {
			return rspec.Mount{}, flagErr("mount", raw, "a bind mount needs src=/absolute/host/path")
		}
		if len(tmpfsOpts) > 0 {
			return rspec.Mount{}, flagErr("mount", raw, "size and mode apply to tmpfs mounts only")
		}
		m = rspec.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind"}}
	case "tmpfs":
		if src != "" {
			return rspec.Mount{}, flagErr("mount", raw, "a tmpfs mount has no src: drop src=%s", src)
		}
		m = rspec.Mount{Type: "tmpfs", Source: "tmpfs", Destination: dst, Options: append([]string{"nosuid", "nodev"}, tmpfsOpts...)}
	case "":
		return rspec.Mount{}, flagErr("mount", raw, "no type=: write type=bind or type=tmpfs")
	default:
		return rspec.Mount{}, flagErr("mount", raw, "type %q cannot be mapped to a PVE container: use type=bind (a host directory, becomes mpN) or type=tmpfs (becomes lxc.mount.entry); proc, sysfs, devpts, mqueue and cgroup come from LXC itself", typ)
	}
	if ro {
		m.Options = append(m.Options, "ro")
	}
	if strings.Contains("/"+dst+"/", "/../") {
		return rspec.Mount{}, flagErr("mount", raw, "dst=%s contains '..': write the destination as a clean absolute path inside the container", dst)
	}
	if typ == "bind" && !path.IsAbs(src) {
		return rspec.Mount{}, flagErr("mount", raw, "src=%s is relative: PVE bind mounts need an absolute host path, e.g. src=$(realpath %s)", src, src)
	}
	if lxcProvided[path.Clean(dst)] {
		return rspec.Mount{}, flagErr("mount", raw, "LXC mounts %s itself: choose another destination", path.Clean(dst))
	}
	// The rules convert maps mounts by, with its words.
	if _, err := lxc.FromSpec(&rspec.Spec{Mounts: []rspec.Mount{m}}, true); err != nil {
		var me *lxc.MountError
		if errors.As(err, &me) {
			return rspec.Mount{}, flagErr("mount", raw, "%s", me.Msg)
		}
		return rspec.Mount{}, flagErr("mount", raw, "%v", err)
	}
	m.Destination = path.Clean(m.Destination)
	return m, nil
}

// lxcProvided are the paths LXC mounts in every container.
var lxcProvided = map[string]bool{
	"/": true, "/proc": true, "/sys": true, "/dev": true, "/dev/pts": true, "/dev/shm": true,
	"/dev/mqueue": true, "/sys/fs/cgroup": true,
}

var memRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?$`)

func parseMemory(s string) (int64, error) {
	m := memRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, flagErr("memory", s, "write bytes or a number with k, m, g or t (powers of 1024), e.g. --memory 512m")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[strings.ToLower(m[2])]
	n := v * mult
	if n < 4<<20 {
		return 0, flagErr("memory", s, "less than 4 MiB cannot run a container: write e.g. --memory 512m")
	}
	if n > math.MaxInt64/2 {
		return 0, flagErr("memory", s, "too large")
	}
	return int64(n), nil
}

// cpuPeriod is the CFS period quotas are written against (docker's).
const cpuPeriod = 100000

func parseCPUs(s string) (int64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, flagErr("cpus", s, "write a number of CPUs, e.g. --cpus 2 or --cpus 0.5")
	}
	if v < 0.01 || v > 8192 {
		return 0, flagErr("cpus", s, "must be between 0.01 and 8192")
	}
	return int64(math.Round(v * cpuPeriod)), nil
}

// Archs are the architectures Proxmox VE runs, by their PVE/Debian names:
// what --arch accepts (besides the OCI and uname spellings ociArch maps).
var Archs = []string{"amd64", "arm64", "i386", "armhf", "riscv64"}

// ociArch maps an architecture given as PVE/Debian or OCI names to the
// OCI architecture and variant the image annotations use.
func ociArch(s string) (string, string, error) {
	switch strings.ToLower(s) {
	case "amd64", "x86_64":
		return "amd64", "", nil
	case "arm64", "aarch64":
		return "arm64", "", nil
	case "i386", "386", "i686":
		return "386", "", nil
	case "armhf", "arm", "armv7", "armv7l":
		return "arm", "v7", nil
	case "riscv64":
		return "riscv64", "", nil
	}
	return "", "", fmt.Errorf("not an architecture Proxmox VE runs: use %s or %s", strings.Join(Archs[:len(Archs)-1], ", "), Archs[len(Archs)-1])
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Annotations umoci writes from the image config, which convert reads.
const (
	annotationOS           = "org.opencontainers.image.os"
	annotationArch         = "org.opencontainers.image.architecture"
	annotationVariant      = "org.opencontainers.image.variant"
	annotationCreated      = "org.opencontainers.image.created"
	annotationExposedPorts = "org.opencontainers.image.exposedPorts"
)

// BaseSpec is the runtime config every generated bundle starts from: what
// `runc spec` writes, bound for LXC: the only mounts are the ones LXC
// provides itself (convert skips them), no hostname, and a shell as the
// process until the rootfs or the flags say otherwise.
func BaseSpec() *rspec.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &rspec.Spec{
		Version: rspec.Version,
		Root:    &rspec.Root{Path: "rootfs"},
		Process: &rspec.Process{
			Args:            []string{"/bin/sh"},
			Env:             []string{defaultPath},
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities: &rspec.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []rspec.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Mounts: []rspec.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &rspec.Linux{
			Resources: &rspec.LinuxResources{
				Devices: []rspec.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Namespaces: []rspec.LinuxNamespace{
				{Type: rspec.PIDNamespace}, {Type: rspec.NetworkNamespace}, {Type: rspec.IPCNamespace},
				{Type: rspec.UTSNamespace}, {Type: rspec.MountNamespace}, {Type: rspec.CgroupNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
		Annotations: map[string]string{},
	}
}

// applyOverrides puts the flags into spec.
func applyOverrides(spec *rspec.Spec, o *overrides) {
	if spec.Process == nil {
		spec.Process = BaseSpec().Process
	}
	p := spec.Process
	if o.args != nil {
		p.Args = o.args
	}
	for _, e := range o.env {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, old := range p.Env {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				p.Env[i], replaced = e, true
				break
			}
		}
		if !replaced {
			p.Env = append(p.Env, e)
		}
	}
	if o.cwd != "" {
		p.Cwd = o.cwd
	}
	if o.user != nil {
		p.User.UID, p.User.GID = o.user.UID, o.user.GID
	}
	if o.hostname != "" {
		spec.Hostname = o.hostname
	}
	spec.Mounts = append(spec.Mounts, o.mounts...)
	if o.memory != nil || o.cpuQuota != nil {
		if spec.Linux == nil {
			spec.Linux = &rspec.Linux{}
		}
		if spec.Linux.Resources == nil {
			spec.Linux.Resources = &rspec.LinuxResources{}
		}
		r := spec.Linux.Resources
		if o.memory != nil {
			r.Memory = &rspec.LinuxMemory{Limit: o.memory}
		}
		if o.cpuQuota != nil {
			period := uint64(cpuPeriod)
			r.CPU = &rspec.LinuxCPU{Quota: o.cpuQuota, Period: &period}
		}
	}
	if o.arch != "" {
		if spec.Annotations == nil {
			spec.Annotations = map[string]string{}
		}
		spec.Annotations[annotationArch] = o.arch
		delete(spec.Annotations, annotationVariant)
		if o.variant != "" {
			spec.Annotations[annotationVariant] = o.variant
		}
	}
}

// rootless gives the caller's ids the role of root, as umoci's rootless
// unpack records it: convert then reads owners from
// user.rootlesscontainers.
func rootless(spec *rspec.Spec) {
	if spec.Linux == nil {
		spec.Linux = &rspec.Linux{}
	}
	spec.Linux.UIDMappings = []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(os.Geteuid()), Size: 1}}
	spec.Linux.GIDMappings = []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(os.Getegid()), Size: 1}}
	var ns []rspec.LinuxNamespace
	for _, n := range spec.Linux.Namespaces {
		if n.Type != rspec.UserNamespace {
			ns = append(ns, n)
		}
	}
	spec.Linux.Namespaces = append(ns, rspec.LinuxNamespace{Type: rspec.UserNamespace})
}

// rootfsFacts are what a rootfs tells about its default process and its
// architecture.
type rootfsFacts struct {
	hasInit bool
	arch    string // OCI architecture from /bin/sh's ELF header, "" if unknown
	variant string
	hasSh   bool
}

// inspect reads /sbin/init and /bin/sh the way the container will see
// them (symlinks resolved inside the rootfs), with convert's rules.
func inspect(root string) rootfsFacts {
	var f rootfsFacts
	if r := resolveIn(root, "sbin/init"); r != "" {
		fi, err := os.Lstat(filepath.Join(root, r))
		f.hasInit = err == nil && fi.Mode().IsRegular()
	}
	sh := resolveIn(root, "bin/sh")
	if sh == "" {
		return f
	}
	p := filepath.Join(root, sh)
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		return f
	}
	f.hasSh = true
	t := tartree.New()
	t.Put("bin/sh", &tartree.Node{Type: tar.TypeReg, Mode: 0o755, Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	if a := template.ArchFromELF(t); a != "" {
		f.arch, f.variant, _ = ociArch(a)
	}
	return f
}

// defaultProcess is the rootfs's init when it has one (a system
// container), else a shell.
func (f rootfsFacts) defaultArgs() []string {
	if f.hasInit {
		return []string{"/sbin/init"}
	}
	return []string{"/bin/sh"}
}

// checkConvertible runs convert's mapping of the runtime config, so a
// bundle generate writes is one convert takes.
func checkConvertible(spec *rspec.Spec, hasInit bool) error {
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	if _, err := lxc.FromSpec(spec, lxc.IsSystemContainer(args, hasInit)); err != nil {
		return fmt.Errorf("config.json would not convert to a PVE container: %w", err)
	}
	return nil
}
