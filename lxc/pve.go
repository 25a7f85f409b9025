package lxc

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PVEContainer is a pve-container release. Which keys, raw lxc.* lines
// and property-string fields a CT config may hold depends on it: PVE
// refuses the whole config ("unable to parse config") when one line is
// not one its release knows.
type PVEContainer struct{ Major, Minor, Patch int }

// The pve-container releases of the PVE versions nexcage targets.
var (
	PVE90 = PVEContainer{6, 0, 9}  // PVE 9.0
	PVE91 = PVEContainer{6, 0, 18} // PVE 9.1
	PVE92 = PVEContainer{6, 1, 10} // PVE 9.2
	// LatestPVE is the newest release nexcage knows; Parse judges by it.
	LatestPVE = PVE92
)

func (v PVEContainer) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast compares releases.
func (v PVEContainer) AtLeast(o PVEContainer) bool {
	if v.Major != o.Major {
		return v.Major > o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor > o.Minor
	}
	return v.Patch >= o.Patch
}

// AppContainers reports the application-container keys (entrypoint, env,
// lxc.environment.runtime, netN host-managed). 6.0.9 lacks them and
// 6.0.18 has them; nexcage assumes them from 6.0.18 on, as it knows no
// release in between.
func (v PVEContainer) AppContainers() bool { return v.AtLeast(PVE91) }

// InitUser reports lxc.init.uid, lxc.init.gid and lxc.init.groups, and
// the idmap and keepattrs mount point options: pve-container 6.1.0 on.
func (v PVEContainer) InitUser() bool { return v.AtLeast(PVEContainer{6, 1, 0}) }

var reContainerRelease = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// ParsePVEContainer reads a pve-container version such as "6.0.18" or
// "6.1.10~bpo1".
func ParsePVEContainer(s string) (PVEContainer, error) {
	m := reContainerRelease.FindStringSubmatch(s)
	if m == nil {
		return PVEContainer{}, fmt.Errorf("%q is not a pve-container version", s)
	}
	var v PVEContainer
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// rawKeys is pve-container's valid_lxc_conf_keys: an exact list. A value
// other than "" is PVE's reason for refusing the key.
var rawKeys = map[string]string{
	"lxc.apparmor.profile": "", "lxc.apparmor.allow_incomplete": "", "lxc.apparmor.allow_nesting": "",
	"lxc.apparmor.raw": "", "lxc.selinux.context": "", "lxc.include": "", "lxc.arch": "", "lxc.uts.name": "",
	"lxc.signal.halt": "", "lxc.signal.reboot": "", "lxc.signal.stop": "",
	"lxc.init.cmd": "", "lxc.init.cwd": "",
	"lxc.pty.max": "", "lxc.console.logfile": "", "lxc.console.path": "", "lxc.tty.max": "",
	"lxc.devtty.dir": "", "lxc.hook.autodev": "", "lxc.autodev": "", "lxc.kmsg": "",
	"lxc.mount.fstab": "", "lxc.mount.entry": "", "lxc.mount.auto": "",
	"lxc.rootfs.path":    "lxc.rootfs.path is auto generated from rootfs",
	"lxc.rootfs.mount":   "",
	"lxc.rootfs.options": `lxc.rootfs.options is not supported, please use mount point options in the "rootfs" key`,
	"lxc.cap.drop":       "", "lxc.cap.keep": "",
	"lxc.seccomp.profile": "", "lxc.seccomp.notify.proxy": "", "lxc.seccomp.notify.cookie": "",
	"lxc.idmap":          "",
	"lxc.hook.pre-start": "", "lxc.hook.pre-mount": "", "lxc.hook.mount": "", "lxc.hook.start": "",
	"lxc.hook.stop": "", "lxc.hook.post-stop": "", "lxc.hook.clone": "", "lxc.hook.destroy": "",
	"lxc.hook.version": "",
	"lxc.log.level":    "", "lxc.log.file": "",
	"lxc.start.auto": "", "lxc.start.delay": "", "lxc.start.order": "",
	"lxc.group": "", "lxc.environment": "",
	"lxc.sysctl.fs.mqueue": "", "lxc.sysctl.kernel.msgmax": "", "lxc.sysctl.kernel.msgmnb": "",
	"lxc.sysctl.kernel.msgmni": "", "lxc.sysctl.kernel.sem": "", "lxc.sysctl.kernel.shmall": "",
	"lxc.sysctl.kernel.shmmax": "", "lxc.sysctl.kernel.shmmni": "", "lxc.sysctl.kernel.shm_rmid_forced": "",
}

// Keys that exist from some release on only.
var (
	rawKeysApp  = map[string]bool{"lxc.environment.runtime": true, "lxc.environment.hooks": true}
	rawKeysInit = map[string]bool{"lxc.init.uid": true, "lxc.init.gid": true, "lxc.init.groups": true}
)

// deprecatedRawKeys are accepted (PVE warns and keeps them).
var deprecatedRawKeys = map[string]bool{
	"lxc.aa_profile": true, "lxc.aa_allow_incomplete": true, "lxc.console": true, "lxc.devttydir": true,
	"lxc.haltsignal": true, "lxc.rebootsignal": true, "lxc.stopsignal": true, "lxc.id_map": true,
	"lxc.init_cmd": true, "lxc.loglevel": true, "lxc.logfile": true, "lxc.mount": true,
	"lxc.network.type": true, "lxc.network.flags": true, "lxc.network.link": true, "lxc.network.mtu": true,
	"lxc.network.name": true, "lxc.network.hwaddr": true, "lxc.network.ipv4": true,
	"lxc.network.ipv4.gateway": true, "lxc.network.ipv6": true, "lxc.network.ipv6.gateway": true,
	"lxc.network.script.up": true, "lxc.network.script.down": true, "lxc.pts": true,
	"lxc.se_context": true, "lxc.seccomp": true, "lxc.tty": true, "lxc.utsname": true,
}

// rawKeyRE is the key part of parse_pct_config's lxc line pattern.
var rawKeyRE = regexp.MustCompile(`^lxc\.[a-z0-9_\-.]+$`)

// CheckRawKeyFor returns an error for a raw key pve-container v refuses
// (is_valid_lxc_conf_key): the exact list, lxc.cgroup.*, lxc.cgroup2.*,
// lxc.prlimit.*, lxc.net.* and lxc.limit.* as prefixes, and the
// deprecated names PVE renames with a warning.
func CheckRawKeyFor(key string, v PVEContainer) error {
	if !rawKeyRE.MatchString(key) {
		return fmt.Errorf("raw key %s is not one PVE accepts: PVE refuses the whole config", key)
	}
	if why, ok := rawKeys[key]; ok {
		if why != "" {
			return fmt.Errorf("%s is refused by PVE: %s", key, why)
		}
		return nil
	}
	switch {
	case rawKeysApp[key] && v.AppContainers(), rawKeysInit[key] && v.InitUser():
		return nil
	case rawKeysApp[key]:
		return fmt.Errorf("raw key %s needs pve-container 6.0.18 (PVE 9.1) or later; %s refuses the whole config", key, v)
	case rawKeysInit[key]:
		return fmt.Errorf("raw key %s needs pve-container 6.1.0 (PVE 9.2) or later; %s refuses the whole config", key, v)
	case deprecatedRawKeys[key]:
		return nil
	}
	for _, p := range []string{"lxc.cgroup.", "lxc.cgroup2.", "lxc.prlimit.", "lxc.net.", "lxc.limit."} {
		if strings.HasPrefix(key, p) {
			return nil
		}
	}
	return fmt.Errorf("raw key %s is not one PVE accepts: PVE refuses the whole config", key)
}

// ---- PVE keys: confdesc and its schema ----

type ktype int

const (
	kString ktype = iota
	kInt
	kNumber
	kBool
)

type keySpec struct {
	typ      ktype
	min, max float64
	hasMin   bool
	hasMax   bool
	enum     []string
	maxLen   int
	check    func(string) error
	props    *propSpec
}

type propSpec struct {
	defaultKey string
	props      map[string]keySpec
	required   []string
	// since lists properties that need a newer release.
	since map[string]PVEContainer
}

func intRange(min, max float64) keySpec {
	return keySpec{typ: kInt, min: min, max: max, hasMin: true, hasMax: max > 0}
}

// mountOption is pve-container's $valid_mount_option_re (Config.pm), the
// parts of a mountoptions value.
const mountOption = `(?:discard|lazytime|noatime|nodev|noexec|nosuid)`

var (
	kbool = keySpec{typ: kBool}
	kstr  = keySpec{typ: kString}

	mountProps = map[string]keySpec{
		"volume": {typ: kString, check: checkMPPath}, "size": {typ: kString, check: checkDiskSize},
		"acl": kbool, "quota": kbool, "replicate": kbool, "ro": kbool, "shared": kbool,
		"mountoptions": {typ: kString, check: pattern(`^` + mountOption + `(?:;` + mountOption + `)*$`)}, "idmap": kstr, "keepattrs": kbool,
		"mp": {typ: kString, check: checkMPPath}, "backup": kbool,
	}
	initOnly   = map[string]PVEContainer{"idmap": {6, 1, 0}, "keepattrs": {6, 1, 0}}
	rootfsSpec = &propSpec{defaultKey: "volume", props: without(mountProps, "mp", "backup", "keepattrs"), required: []string{"volume"}, since: initOnly}
	mpSpec     = &propSpec{defaultKey: "volume", props: mountProps, required: []string{"volume", "mp"}, since: initOnly}
	netSpec    = &propSpec{props: map[string]keySpec{
		"name": {typ: kString, check: pattern(`^[-_.\w\d]+$`)}, "bridge": {typ: kString, check: pattern(`^[-_.\w\d]+$`)},
		"hwaddr": kstr, "ip": kstr, "gw": kstr, "ip6": kstr, "gw6": kstr, "firewall": kbool, "link_down": kbool,
		"mtu": intRange(64, 65535), "rate": {typ: kNumber, hasMin: true}, "tag": intRange(1, 4094), "trunks": kstr,
		"type": {typ: kString, enum: []string{"veth"}}, "host-managed": kbool,
	}, required: []string{"name"}, since: map[string]PVEContainer{"host-managed": PVE91}}
	featureSpec = &propSpec{props: map[string]keySpec{
		"force_rw_sys": kbool, "fuse": kbool, "keyctl": kbool, "mknod": kbool, "mount": kstr, "nesting": kbool,
	}}
	devSpec = &propSpec{defaultKey: "path", props: map[string]keySpec{
		"path": kstr, "mode": kstr, "uid": intRange(0, 0), "gid": intRange(0, 0), "deny-write": kbool,
	}}
	unusedSpec = &propSpec{defaultKey: "volume", props: map[string]keySpec{"volume": kstr}, required: []string{"volume"}}

	// pveKeys are confdesc's keys (PVE::LXC::Config), as the API schema
	// checks them. String formats nexcage does not model (nameserver,
	// searchdomain, startup, tags, timezone, hookscript) are not checked.
	pveKeys = map[string]keySpec{
		"arch":         {typ: kString, enum: []string{"amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"}},
		"cmode":        {typ: kString, enum: []string{"shell", "console", "tty"}},
		"console":      kbool,
		"cores":        intRange(1, 8192),
		"cpulimit":     {typ: kNumber, hasMin: true, hasMax: true, max: 8192},
		"cpuunits":     intRange(0, 500000),
		"debug":        kbool,
		"description":  {typ: kString, maxLen: 8192},
		"features":     {typ: kString, props: featureSpec},
		"hookscript":   kstr,
		"hostname":     {typ: kString, maxLen: 255, check: checkDNSName},
		"lock":         {typ: kString, enum: []string{"backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot", "snapshot-delete"}},
		"memory":       intRange(16, 0),
		"nameserver":   kstr,
		"onboot":       kbool,
		"ostype":       {typ: kString, enum: []string{"debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "unmanaged"}},
		"protection":   kbool,
		"rootfs":       {typ: kString, props: rootfsSpec},
		"searchdomain": kstr,
		"startup":      kstr,
		"swap":         intRange(0, 0),
		"tags":         kstr,
		"template":     kbool,
		"timezone":     kstr,
		"tty":          intRange(0, 6),
		"unprivileged": kbool,
	}
	pveKeysApp = map[string]keySpec{
		"entrypoint": {typ: kString, check: checkNoControl},
		"env":        {typ: kString, check: checkEnvList},
	}
	indexedSpecs = map[string]struct {
		max  int
		spec keySpec
	}{
		"mp":     {255, keySpec{typ: kString, props: mpSpec}},
		"net":    {31, keySpec{typ: kString, props: netSpec}},
		"dev":    {255, keySpec{typ: kString, props: devSpec}},
		"unused": {255, keySpec{typ: kString, props: unusedSpec}},
	}
)

func without(m map[string]keySpec, drop ...string) map[string]keySpec {
	out := map[string]keySpec{}
	for k, v := range m {
		out[k] = v
	}
	for _, d := range drop {
		delete(out, d)
	}
	return out
}

func pattern(re string) func(string) error {
	r := regexp.MustCompile(re)
	return func(s string) error {
		if !r.MatchString(s) {
			return fmt.Errorf("value does not match the regex pattern")
		}
		return nil
	}
}

var (
	mpDotRE   = regexp.MustCompile(`/\.\.?/|/\.\.?$|^\.\./`)
	diskRE    = regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT])?$`)
	intRE     = regexp.MustCompile(`^[+-]?\d+$`)
	numRE     = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
	envVarRE  = regexp.MustCompile(`^\w+=[^\x00-\x08\x0a-\x1f\x7f]*$`)
	envNameRE = regexp.MustCompile(`^\w+$`)
	controlRE = regexp.MustCompile(`[\x00-\x08\x0a-\x1f\x7f]`)
)

// checkMPPath is verify_lxc_mp_string.
func checkMPPath(s string) error {
	if mpDotRE.MatchString(s) {
		return fmt.Errorf("%s contains illegal character sequences (not a clean path)", s)
	}
	return nil
}

func checkDiskSize(s string) error {
	if !diskRE.MatchString(s) {
		return fmt.Errorf("unable to parse size '%s'", s)
	}
	return nil
}

func checkDNSName(s string) error {
	if !ValidDNSName(s) {
		return fmt.Errorf("value does not look like a valid DNS name")
	}
	return nil
}

func checkNoControl(s string) error {
	if s == "" || controlRE.MatchString(s) {
		return fmt.Errorf("value does not match the regex pattern")
	}
	return nil
}

// ValidEnvName reports whether PVE's env pattern (\w+=...) accepts a
// variable of this name: letters, digits and '_' only. OCI allows more
// (APP.MODE, my-var).
func ValidEnvName(name string) bool { return envNameRE.MatchString(name) }

// CheckEnvVar checks one NAME=VALUE against PVE's env pattern.
func CheckEnvVar(s string) error {
	if !envVarRE.MatchString(s) {
		return fmt.Errorf("env %q does not match PVE's pattern NAME=VALUE (NAME of letters, digits and '_', VALUE without control characters but tab)", s)
	}
	return nil
}

func checkEnvList(s string) error {
	for _, e := range strings.Split(s, "\x00") {
		if err := CheckEnvVar(e); err != nil {
			return err
		}
	}
	return nil
}

// keySpecFor finds the schema of a PVE key for release v.
func keySpecFor(key string, v PVEContainer) (keySpec, bool) {
	if s, ok := pveKeys[key]; ok {
		return s, true
	}
	if s, ok := pveKeysApp[key]; ok && v.AppContainers() {
		return s, true
	}
	p, n := splitIndex(key)
	if ix, ok := indexedSpecs[p]; ok && n >= 0 && n <= ix.max && strconv.Itoa(n) == key[len(p):] {
		return ix.spec, true
	}
	return keySpec{}, false
}

// CheckKeyFor returns an error for a "key: value" line pve-container v
// refuses: an unknown key, or a value its schema rejects.
func CheckKeyFor(key, value string, v PVEContainer) error {
	s, ok := keySpecFor(key, v)
	if !ok {
		return fmt.Errorf("unknown key %q: PVE %s refuses the whole config", key, v)
	}
	if err := s.validate(value, v); err != nil {
		return fmt.Errorf("%s: %v", key, err)
	}
	return nil
}

func (s keySpec) validate(value string, v PVEContainer) error {
	switch s.typ {
	case kBool:
		switch strings.ToLower(value) {
		case "0", "1", "true", "false", "yes", "no", "on", "off":
			return nil
		}
		return fmt.Errorf("type check ('boolean') failed - got '%s'", value)
	case kInt, kNumber:
		re, name := intRE, "integer"
		if s.typ == kNumber {
			re, name = numRE, "number"
		}
		if !re.MatchString(value) {
			return fmt.Errorf("type check ('%s') failed - got '%s'", name, value)
		}
		x, _ := strconv.ParseFloat(value, 64)
		if s.hasMax && x > s.max {
			return fmt.Errorf("value must have a maximum value of %g", s.max)
		}
		if s.hasMin && x < s.min {
			return fmt.Errorf("value must have a minimum value of %g", s.min)
		}
	}
	if s.maxLen > 0 && len(value) > s.maxLen {
		return fmt.Errorf("value may only be %d characters long", s.maxLen)
	}
	if len(s.enum) > 0 {
		ok := false
		for _, e := range s.enum {
			ok = ok || e == value
		}
		if !ok {
			return fmt.Errorf("value '%s' does not have a value in the enumeration '%s'", value, strings.Join(s.enum, ", "))
		}
	}
	if s.check != nil {
		if err := s.check(value); err != nil {
			return err
		}
	}
	if s.props != nil {
		return s.props.validate(value, v)
	}
	return nil
}

func (p *propSpec) validate(value string, v PVEContainer) error {
	seen := map[string]bool{}
	// As parse_property_string: blank parts are skipped, a part without
	// '=' anywhere is the default key, and "key=" or "=value" is refused.
	for _, part := range strings.Split(value, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, val, hasEq := strings.Cut(part, "=")
		switch {
		case !hasEq && p.defaultKey == "":
			return fmt.Errorf("format error: unknown property %q", part)
		case !hasEq:
			k, val = p.defaultKey, part
		case k == "" || val == "":
			return fmt.Errorf("format error: missing key in comma-separated list property")
		}
		s, ok := p.props[k]
		if since, gated := p.since[k]; ok && gated && !v.AtLeast(since) {
			return fmt.Errorf("format error: %s: needs pve-container %s or later", k, since)
		}
		if !ok {
			return fmt.Errorf("format error: unknown property %q", k)
		}
		if seen[k] {
			return fmt.Errorf("format error: %s: duplicate key in comma-separated list property", k)
		}
		seen[k] = true
		if err := s.validate(val, v); err != nil {
			return fmt.Errorf("format error: %s: %v", k, err)
		}
	}
	for _, r := range p.required {
		if !seen[r] {
			return fmt.Errorf("format error: %s: property is missing and it is not optional", r)
		}
	}
	return nil
}

// RawKeyNames lists every raw key name PVE knows in some release (not the
// prefix families), sorted.
func RawKeyNames() []string {
	var out []string
	for _, m := range []map[string]bool{rawKeysApp, rawKeysInit, deprecatedRawKeys} {
		for k := range m {
			out = append(out, k)
		}
	}
	for k := range rawKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ReleaseError is a config line a pve-container release cannot parse and
// for which no translation keeps its meaning.
type ReleaseError struct {
	Key, Value string
	Have, Need PVEContainer
	Why        string // when the key exists but this use of it is unsafe
}

func (e *ReleaseError) Error() string {
	if e.Why != "" {
		return fmt.Sprintf("%s: %s %s; pve-container %s has no safer way (it needs %s or later)", e.Key, e.Value, e.Why, e.Have, e.Need)
	}
	return fmt.Sprintf("%s: %s needs pve-container %s or later, this PVE has %s", e.Key, e.Value, e.Need, e.Have)
}

// EnvReleaseError is an image environment a pve-container release can
// only write as plain lxc.environment lines. LXC (5 and later) gives those
// to the hooks too, which PVE runs as root on the host: any variable there
// (PATH, HOME, TMPDIR, LD_PRELOAD, ...) changes what the host runs, so no
// image variable ever goes there. pve-container 6.0.18 (PVE 9.1) adds
// lxc.environment.runtime, which reaches only the container.
type EnvReleaseError struct {
	Names []string
	Have  PVEContainer
}

func (e *EnvReleaseError) Error() string {
	return fmt.Sprintf("pve-container %s has only plain lxc.environment, which LXC also gives the hooks PVE runs as root on the host, so the image's environment (%s) cannot be passed; it needs pve-container %s (PVE 9.1) or later", e.Have, strings.Join(e.Names, ", "), PVE91)
}

// envNames are the names of c's environment, wherever it is kept.
func (c Config) envNames() []string {
	var out []string
	for _, e := range c.Env {
		k, _, _ := strings.Cut(e, "=")
		out = append(out, k)
	}
	for _, r := range c.Raw {
		if r.Key == "lxc.environment" {
			k, _, _ := strings.Cut(r.Value, "=")
			out = append(out, k)
		}
	}
	return out
}

// DropEnv returns c without its environment, and the names it dropped.
func (c Config) DropEnv() (Config, []string) {
	names := c.envNames()
	out := c
	out.Env = nil
	out.Raw = nil
	for _, r := range c.Raw {
		if r.Key != "lxc.environment" {
			out.Raw = append(out.Raw, r)
		}
	}
	return out, names
}

// initUserKeys are the raw keys that run the entrypoint as a user.
var initUserKeys = []string{"lxc.init.uid", "lxc.init.gid", "lxc.init.groups"}

// For returns the config as pve-container v must be given it. A config
// nexcage writes is for the newest PVE; for an older one:
//   - before 6.0.18 (PVE 9.0) the entrypoint becomes lxc.init.cmd (LXC
//     applies it to init); an environment is an *EnvReleaseError (see
//     DropEnv), never plain lxc.environment;
//   - before 6.1.0, lxc.init.uid/gid/groups are a *ReleaseError, or, with
//     asRoot, dropped: the entrypoint then runs as root.
//
// Every other line must be one v parses, or For returns a *ReleaseError.
func (c Config) For(v PVEContainer, asRoot bool) (Config, error) {
	out := c
	out.Env = nil
	out.Raw = nil
	var pre []Option
	if c.Entrypoint != "" && !v.AppContainers() {
		pre = append(pre, Option{"lxc.init.cmd", c.Entrypoint})
		out.Entrypoint = ""
	}
	if names := c.envNames(); len(names) > 0 && !v.AppContainers() {
		return Config{}, &EnvReleaseError{Names: names, Have: v}
	}
	for _, e := range c.Env {
		if name, _, _ := strings.Cut(e, "="); !ValidEnvName(name) {
			return Config{}, &EnvError{Index: -1, Name: name, Msg: envNameMsg}
		}
		out.Env = append(out.Env, e)
	}
	for _, r := range c.Raw {
		if r.Key == "lxc.environment" {
			// Plain lxc.environment reaches the hooks on every release.
			k, _, _ := strings.Cut(r.Value, "=")
			return Config{}, &EnvError{Index: -1, Name: k, Msg: envNameMsg}
		}
		if !v.InitUser() && slices.Contains(initUserKeys, r.Key) {
			if asRoot {
				continue
			}
			return Config{}, &ReleaseError{Key: r.Key, Value: r.Value, Have: v, Need: PVEContainer{6, 1, 0}}
		}
		if err := CheckRawKeyFor(r.Key, v); err != nil {
			need := PVE91
			if slices.Contains(initUserKeys, r.Key) {
				need = PVEContainer{6, 1, 0}
			}
			return Config{}, &ReleaseError{Key: r.Key, Value: r.Value, Have: v, Need: need}
		}
		out.Raw = append(out.Raw, r)
	}
	out.Raw = append(pre, out.Raw...)
	out.MountPoints = append([]MountPoint(nil), c.MountPoints...)
	out.Options = append([]Option(nil), c.Options...)
	return out, nil
}
