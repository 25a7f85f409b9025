package generate

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// SpecOptions are the process and container settings a generated
// config.json gets; the zero value changes nothing. They override what the
// rootfs or the template's sidecars say. A value convert could not map is
// refused with an *OptionError naming the field.
type SpecOptions struct {
	// Args is the process's argv.
	Args []string
	// Cmd is the process as one command line, split as LXC splits
	// lxc.init.cmd (single and double quotes, no backslashes). Args and
	// Cmd exclude each other.
	Cmd string
	// Env adds or replaces NAME=VALUE variables.
	Env []string
	// Cwd is the process's working directory, absolute.
	Cwd string
	// User is UID[:GID], numeric.
	User     string
	Hostname string
	// Mounts are type=bind,src=/host,dst=/ct[,ro] or
	// type=tmpfs,dst=/ct[,size=64m][,mode=1777][,ro].
	Mounts []string
	// Memory is the memory limit: bytes, or a number with k, m, g or t.
	Memory string
	// CPUs is a number of CPUs (a fraction is a share of one).
	CPUs string
	// RootPath is root.path for Spec (Bundle sets it from its source).
	RootPath string
	// Arch overrides the architecture read from /bin/sh (Debian or OCI
	// names: amd64, arm64, i386, armhf, riscv64).
	Arch string
}

// The option names an *OptionError gives in Field and With: the
// SpecOptions and Options fields, lower-case.
const (
	FieldArgs     = "args"
	FieldCmd      = "cmd"
	FieldEnv      = "env"
	FieldCwd      = "cwd"
	FieldUser     = "user"
	FieldHostname = "hostname"
	FieldMount    = "mount" // one of Mounts
	FieldMemory   = "memory"
	FieldCPUs     = "cpus"
	FieldRootPath = "rootpath"
	FieldArch     = "arch"
	FieldRootfs   = "rootfs"
	FieldTemplate = "template"
	FieldLink     = "link"
)

// OptionError is an option value generate cannot use, or two options that
// do not fit together. Msg says what is wrong and the fix without naming
// the option, so that a caller names it its own way (a command line names
// its flag).
type OptionError struct {
	// Field is the option at fault (FieldMemory, FieldCmd, ...); "" when
	// the error is about the options as a whole.
	Field string
	// Value is the value refused; "" when the error is not about one
	// value.
	Value string
	// With is the other option when two exclude each other: With and
	// Field are then named together, With first.
	With string
	// Msg says what is wrong, and the fix.
	Msg string
}

func (e *OptionError) Error() string {
	switch {
	case e.With != "":
		return fmt.Sprintf("%s and %s %s", e.With, e.Field, e.Msg)
	case e.Field == "":
		return e.Msg
	case e.Value == "":
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("%s %s: %s", e.Field, quoteArg(e.Value), e.Msg)
}

func quoteArg(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'\\$`") {
		return strconv.Quote(s)
	}
	return s
}

func optErr(field, value, format string, args ...any) error {
	return &OptionError{Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// conflictErr says the options with and field exclude each other.
func conflictErr(with, field, msg string) error {
	return &OptionError{Field: field, With: with, Msg: msg}
}

// overrides are SpecOptions checked and parsed.
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

// parse checks every option on its own, with convert's rules, so that a
// value convert could not map is refused here, naming the option.
func (f SpecOptions) parse() (*overrides, error) {
	o := &overrides{}
	var err error
	if o.args, err = f.parseProcess(); err != nil {
		return nil, err
	}
	if o.env, err = parseEnv(f.Env); err != nil {
		return nil, err
	}
	if f.Cwd != "" {
		if !path.IsAbs(f.Cwd) || hasControl(f.Cwd) {
			return nil, optErr(FieldCwd, f.Cwd, "the working directory must be an absolute path inside the container, e.g. /app")
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
			return nil, optErr(FieldHostname, f.Hostname, "not a valid DNS name, which PVE requires: letters, digits and '-', dot-separated labels of at most 63 characters")
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
			return nil, optErr(FieldMount, raw, "%s is already the destination of mount %d (%s): give each destination once", m.Destination, j+1, f.Mounts[j])
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
			return nil, optErr(FieldArch, f.Arch, "%v", err)
		}
		o.arch, o.variant = a, v
	}
	return o, nil
}

// parseProcess checks Args or Cmd: the process's argv, nil when neither
// is set.
func (f SpecOptions) parseProcess() ([]string, error) {
	var args []string
	if len(f.Args) > 0 && f.Cmd != "" {
		return nil, conflictErr(FieldArgs, FieldCmd, "both set the process: give one of them")
	}
	switch {
	case len(f.Args) > 0:
		args = f.Args
	case f.Cmd != "":
		var err error
		if args, err = lxc.SplitWordsStrict(f.Cmd); err != nil {
			return nil, optErr(FieldCmd, f.Cmd, "%v: close it, or give the arguments one by one", err)
		}
		if len(args) == 0 {
			return nil, optErr(FieldCmd, f.Cmd, "the command line is empty: write e.g. '/usr/bin/app serve'")
		}
	}
	for i, a := range args {
		if _, err := lxc.JoinCommand([]string{a}); err != nil {
			field, val := FieldArgs, a
			if f.Cmd != "" {
				field, val = FieldCmd, f.Cmd
			}
			return nil, optErr(field, val, "argument %d: %s", i, strings.TrimPrefix(err.Error(), "argument 0 "))
		}
	}
	if args != nil && args[0] == "" {
		return nil, optErr(FieldArgs, "", "the program (the first argument) is empty")
	}
	return args, nil
}

// parseEnv checks NAME=VALUE variables.
func parseEnv(env []string) ([]string, error) {
	var out []string
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return nil, optErr(FieldEnv, e, "write NAME=VALUE (a name without blanks or '=')")
		}
		if hasControl(e) {
			return nil, optErr(FieldEnv, e, "contains control characters, which PVE refuses")
		}
		out = append(out, e)
	}
	return out, nil
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
		return nil, optErr(FieldUser, s, "write numeric UID[:GID], e.g. 1000:1000 (the runtime config holds numbers, not names)")
	}
	u := &rspec.User{UID: uint32(uid)}
	if hasGID {
		gid, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return nil, optErr(FieldUser, s, "write numeric UID[:GID], e.g. 1000:1000 (the runtime config holds numbers, not names)")
		}
		u.GID = uint32(gid)
	}
	return u, nil
}

// mountFields are the fields of a mount option.
type mountFields struct {
	typ, src, dst string
	ro            bool
	tmpfsOpts     []string
}

// splitMount reads the comma-separated fields of a mount option, checking
// each on its own.
func splitMount(raw string) (mountFields, error) {
	var f mountFields
	for _, part := range strings.Split(raw, ",") {
		k, v, hasValue := strings.Cut(part, "=")
		switch strings.ToLower(k) {
		case "type":
			f.typ = v
		case "src", "source":
			f.src = v
		case "dst", "destination", "target", "dest":
			f.dst = v
		case "ro", "readonly":
			if hasValue && v != "1" && v != "true" {
				return f, optErr(FieldMount, raw, "%s takes no value (or 1/true): write ro", k)
			}
			f.ro = true
		case "size":
			if !regexp.MustCompile(`^[0-9]+[kKmMgG%]?$`).MatchString(v) {
				return f, optErr(FieldMount, raw, "size=%s: write bytes or a number with k, m, g or %%, e.g. size=64m", v)
			}
			f.tmpfsOpts = append(f.tmpfsOpts, "size="+strings.ToLower(v))
		case "mode":
			if _, err := strconv.ParseUint(v, 8, 32); err != nil || len(v) > 4 {
				return f, optErr(FieldMount, raw, "mode=%s: write octal permission bits, e.g. mode=1777", v)
			}
			f.tmpfsOpts = append(f.tmpfsOpts, "mode="+v)
		case "":
			return f, optErr(FieldMount, raw, "empty field: write type=bind,src=/host/dir,dst=/in/container[,ro] or type=tmpfs,dst=/run[,size=64m]")
		default:
			return f, optErr(FieldMount, raw, "unknown field %q: the fields are type, src, dst, ro, and for tmpfs size and mode", k)
		}
	}
	return f, nil
}

// parseMount reads type=bind,src=/host,dst=/ct[,ro] and
// type=tmpfs,dst=/ct[,size=...][,mode=...][,ro], and checks the result
// with the very rules convert maps mounts by.
func parseMount(raw string) (rspec.Mount, error) {
	f, err := splitMount(raw)
	if err != nil {
		return rspec.Mount{}, err
	}
	typ, src, dst, ro, tmpfsOpts := f.typ, f.src, f.dst, f.ro, f.tmpfsOpts
	if dst == "" {
		return rspec.Mount{}, optErr(FieldMount, raw, "no dst=: say where the mount goes inside the container, e.g. dst=/data")
	}
	var m rspec.Mount
	switch typ {
	case "bind":
		if src == "" {
			return rspec.Mount{}, optErr(FieldMount, raw, "a bind mount needs src=/absolute/host/path")
		}
		if len(tmpfsOpts) > 0 {
			return rspec.Mount{}, optErr(FieldMount, raw, "size and mode apply to tmpfs mounts only")
		}
		m = rspec.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind"}}
	case "tmpfs":
		if src != "" {
			return rspec.Mount{}, optErr(FieldMount, raw, "a tmpfs mount has no src: drop src=%s", src)
		}
		m = rspec.Mount{Type: "tmpfs", Source: "tmpfs", Destination: dst, Options: append([]string{"nosuid", "nodev"}, tmpfsOpts...)}
	case "":
		return rspec.Mount{}, optErr(FieldMount, raw, "no type=: write type=bind or type=tmpfs")
	default:
		return rspec.Mount{}, optErr(FieldMount, raw, "type %q cannot be mapped to a PVE container: use type=bind (a host directory, becomes mpN) or type=tmpfs (becomes lxc.mount.entry); proc, sysfs, devpts, mqueue and cgroup come from LXC itself", typ)
	}
	if ro {
		m.Options = append(m.Options, "ro")
	}
	if strings.Contains("/"+dst+"/", "/../") {
		return rspec.Mount{}, optErr(FieldMount, raw, "dst=%s contains '..': write the destination as a clean absolute path inside the container", dst)
	}
	if typ == "bind" && !path.IsAbs(src) {
		return rspec.Mount{}, optErr(FieldMount, raw, "src=%s is relative: PVE bind mounts need an absolute host path, e.g. src=$(realpath %s)", src, src)
	}
	if lxcProvided[path.Clean(dst)] {
		return rspec.Mount{}, optErr(FieldMount, raw, "LXC mounts %s itself: choose another destination", path.Clean(dst))
	}
	// The rules convert maps mounts by, with its words.
	if _, err := lxc.FromSpec(&rspec.Spec{Mounts: []rspec.Mount{m}}, true); err != nil {
		var me *lxc.MountError
		if errors.As(err, &me) {
			return rspec.Mount{}, optErr(FieldMount, raw, "%s", me.Msg)
		}
		return rspec.Mount{}, optErr(FieldMount, raw, "%v", err)
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
		return 0, optErr(FieldMemory, s, "write bytes or a number with k, m, g or t (powers of 1024), e.g. 512m")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[strings.ToLower(m[2])]
	n := v * mult
	if n < 4<<20 {
		return 0, optErr(FieldMemory, s, "less than 4 MiB cannot run a container: write e.g. 512m")
	}
	if n > math.MaxInt64/2 {
		return 0, optErr(FieldMemory, s, "too large")
	}
	return int64(n), nil
}

// cpuPeriod is the CFS period quotas are written against (docker's).
const cpuPeriod = 100000

func parseCPUs(s string) (int64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, optErr(FieldCPUs, s, "write a number of CPUs, e.g. 2 or 0.5")
	}
	if v < 0.01 || v > 8192 {
		return 0, optErr(FieldCPUs, s, "must be between 0.01 and 8192")
	}
	return int64(math.Round(v * cpuPeriod)), nil
}

// Archs are the architectures Proxmox VE runs, by their PVE/Debian names:
// what SpecOptions.Arch accepts (besides the OCI and uname spellings ociArch maps).
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
		spec.Annotations[annotation.Arch] = o.arch
		delete(spec.Annotations, annotation.Variant)
		if o.variant != "" {
			spec.Annotations[annotation.Variant] = o.variant
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
	r, err := saferoot.Open(root)
	if err != nil {
		return f
	}
	defer r.Close()
	if _, st, err := r.Stat("sbin/init"); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		f.hasInit = true
	}
	sh, st, err := r.Stat("bin/sh")
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return f
	}
	f.hasSh = true
	t := tartree.New()
	t.Put("bin/sh", &tartree.Node{Type: tar.TypeReg, Mode: 0o755, Open: func() (io.ReadCloser, error) {
		return r.OpenFile(sh, unix.O_RDONLY|unix.O_NONBLOCK)
	}})
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
