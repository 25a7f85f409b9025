package main

// PVE-style parameters: the CLI's option parsing (PVE::JSONSchema
// get_options) and the schema check of every value (check_prop), with
// PVE's messages, because callers match on them.

import (
	"fmt"
	"github.com/nexcage/nexcage/lxc"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

const (
	maxMP  = 255
	maxNet = 31
)

func itoa(i int) string { return strconv.Itoa(i) }

// isIndexed reports whether key is prefix<N>.
func isIndexed(key, prefix string) bool {
	n, ok := strings.CutPrefix(key, prefix)
	if !ok || n == "" {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && strconv.Itoa(i) == n
}

// ---- errors ----

// paramError is PVE's "400 Parameter verification failed." exception: one
// "<param>: <message>" line per bad parameter. The CLI appends the
// command's usage line (RESTHandler::cli_handler sets it on every
// parameter exception); pvesh does not.
type paramError struct {
	errs  map[string]string
	usage string
}

func newParamError(usage string) *paramError {
	return &paramError{errs: map[string]string{}, usage: usage}
}

// add records the first error for a parameter, as add_error does.
func (e *paramError) add(param, msg string) {
	if _, ok := e.errs[param]; !ok {
		e.errs[param] = msg
	}
}

func (e *paramError) has(param string) bool { _, ok := e.errs[param]; return ok }

func (e *paramError) empty() bool { return len(e.errs) == 0 }

// orNil avoids the typed-nil-in-interface trap.
func (e *paramError) orNil() error {
	if e.empty() {
		return nil
	}
	return e
}

func (e *paramError) Error() string {
	var b strings.Builder
	b.WriteString("400 Parameter verification failed.\n")
	keys := make([]string, 0, len(e.errs))
	for k := range e.errs {
		keys = append(keys, k)
	}
	// Perl hashes have no order; sorting keeps output reproducible.
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, e.errs[k])
	}
	if e.usage != "" {
		b.WriteString(e.usage + "\n")
	}
	return b.String()
}

const notInSchema = "property is not defined in schema and the schema does not allow additional properties"

// cliError is an error of the command line itself (400 with usage).
func cliError(msg, usage string) error {
	s := "400 " + msg
	if usage != "" {
		s += "\n" + usage
	}
	return fmt.Errorf("%s", s)
}

// ---- schema ----

type ptype int

const (
	tString ptype = iota
	tInteger
	tNumber
	tBoolean
)

// param is one property of a PVE JSON schema.
type param struct {
	typ       ptype
	min, max  *float64
	minLength int
	maxLength int
	enum      []string
	// format checks the value; its error becomes "invalid format - <err>".
	format func(string) error
	// sub is a property-string format ("k=v,k=v").
	sub *propString
	// list options may be repeated on the command line; PVE joins the
	// values with NUL ("-list" formats).
	list bool
	// since91 parameters exist from PVE 9.1 on only, since92 ones from
	// 9.2 (pve-container 6.1) on.
	since91, since92 bool
}

func num(x float64) *float64 { return &x }

// propString is the schema of a property string.
type propString struct {
	defaultKey string
	props      map[string]*param
	required   []string
}

// schema is an API method's parameters.
type schema struct {
	fixed   map[string]*param
	indexed map[string]struct {
		max int
		p   *param
	}
}

func (s *schema) lookup(name string, v version) *param {
	p := s.fixed[name]
	if p == nil {
		for prefix, ix := range s.indexed {
			if isIndexed(name, prefix) {
				n, _ := strconv.Atoi(name[len(prefix):])
				if n <= ix.max {
					p = ix.p
				}
			}
		}
	}
	if p != nil && p.since91 && !v.appContainers() {
		return nil
	}
	return p
}

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
	dotDirRE  = regexp.MustCompile(`/\.\.?(/|$)`)
	sizeRE    = regexp.MustCompile(`^\d+(\.\d+)?$`)
)

// check validates one value (check_prop), recording errors under path. It
// returns the normalized value (booleans as 0/1).
func check(errs *paramError, path, value string, p *param, v version) string {
	switch p.typ {
	case tInteger:
		if !integerRE.MatchString(value) {
			errs.add(path, fmt.Sprintf("type check ('integer') failed - got '%s'", value))
			return value
		}
	case tNumber:
		if !numberRE.MatchString(value) {
			errs.add(path, fmt.Sprintf("type check ('number') failed - got '%s'", value))
			return value
		}
	case tBoolean:
		switch strings.ToLower(value) {
		case "1", "true", "yes", "on":
			value = "1"
		case "0", "false", "no", "off":
			value = "0"
		default:
			errs.add(path, fmt.Sprintf("type check ('boolean') failed - got '%s'", value))
			return value
		}
	}
	if p.maxLength > 0 && len(value) > p.maxLength {
		errs.add(path, fmt.Sprintf("value may only be %d characters long", p.maxLength))
		return value
	}
	if p.minLength > 0 && len(value) < p.minLength {
		errs.add(path, fmt.Sprintf("value must be at least %d characters long", p.minLength))
		return value
	}
	if p.typ == tInteger || p.typ == tNumber {
		x, _ := strconv.ParseFloat(value, 64)
		if p.max != nil && x > *p.max {
			errs.add(path, fmt.Sprintf("value must have a maximum value of %s", fmtNum(*p.max)))
			return value
		}
		if p.min != nil && x < *p.min {
			errs.add(path, fmt.Sprintf("value must have a minimum value of %s", fmtNum(*p.min)))
			return value
		}
	}
	if len(p.enum) > 0 {
		ok := false
		for _, e := range p.enum {
			ok = ok || e == value
		}
		if !ok {
			errs.add(path, fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", value, strings.Join(p.enum, ", ")))
			return value
		}
	}
	if p.format != nil {
		if err := p.format(value); err != nil {
			errs.add(path, "invalid format - "+err.Error())
			return value
		}
	}
	if p.sub != nil {
		sub := newParamError("")
		checkPropString(sub, path, value, p.sub, v)
		if !sub.empty() {
			// parse_property_string raises "format error" with the
			// sub-properties' errors beside it.
			errs.add(path, "invalid format - format error")
			for k, m := range sub.errs {
				errs.add(k, m)
			}
		}
	}
	return value
}

func fmtNum(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

func checkPropString(errs *paramError, path, value string, ps *propString, v version) {
	seen := map[string]bool{}
	for i, part := range strings.Split(value, ",") {
		if part == "" {
			continue
		}
		k, val, hasEq := strings.Cut(part, "=")
		if !hasEq {
			if i != 0 || ps.defaultKey == "" {
				errs.add(path+"."+part, notInSchema)
				continue
			}
			k, val = ps.defaultKey, part
		}
		p := ps.props[k]
		if p != nil && (p.since91 && !v.appContainers() || p.since92 && !v.atLeast(9, 2)) {
			p = nil
		}
		if p == nil {
			errs.add(path+"."+k, notInSchema)
			continue
		}
		if seen[k] {
			errs.add(path+"."+k, "duplicate key in comma-separated list property")
			continue
		}
		seen[k] = true
		check(errs, path+"."+k, val, p, v)
	}
	for _, r := range ps.required {
		if !seen[r] {
			errs.add(path+"."+r, "property is missing and it is not optional")
		}
	}
}

// ---- formats ----

var dnsNameRE = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)

func dnsName(s string) error {
	if !dnsNameRE.MatchString(s) {
		return fmt.Errorf("value does not look like a valid DNS name")
	}
	return nil
}

func storageID(s string) error {
	if !storeIDRE.MatchString(s) {
		return fmt.Errorf("storage ID '%s' contains illegal characters", s)
	}
	return nil
}

// mpPath is verify_lxc_mp_string: no "/./" or "/../" tricks.
func mpPath(s string) error {
	if dotDirRE.MatchString(s) || strings.HasPrefix(s, "../") {
		return fmt.Errorf("%s contains illegal character sequences", s)
	}
	return nil
}

// mpVolumeFormat accepts "STORAGE:SIZE", "SIZE" (default storage), an
// existing volume ID, or an absolute host path.
func mpVolumeFormat(s string) error {
	if strings.HasPrefix(s, "/") {
		return mpPath(s)
	}
	if sizeRE.MatchString(s) {
		return nil
	}
	if _, _, err := parseVolumeID(s); err != nil {
		return err
	}
	return nil
}

func ipv4(s string) error {
	if ip := net.ParseIP(s); ip == nil || ip.To4() == nil {
		return fmt.Errorf("value does not look like a valid IPv4 address")
	}
	return nil
}

func ipv6(s string) error {
	if ip := net.ParseIP(s); ip == nil || ip.To4() != nil {
		return fmt.Errorf("value does not look like a valid IPv6 address")
	}
	return nil
}

func ipv4Config(s string) error {
	if s == "dhcp" || s == "manual" {
		return nil
	}
	if ip, _, err := net.ParseCIDR(s); err != nil || ip.To4() == nil {
		return fmt.Errorf("value does not look like a valid IPv4 network configuration")
	}
	return nil
}

func ipv6Config(s string) error {
	if s == "auto" || s == "dhcp" || s == "manual" {
		return nil
	}
	if ip, _, err := net.ParseCIDR(s); err != nil || ip.To4() != nil {
		return fmt.Errorf("value does not look like a valid IPv6 network configuration")
	}
	return nil
}

func macAddr(s string) error {
	if !regexp.MustCompile(`^(?i)[a-f0-9]{2}(:[a-f0-9]{2}){5}$`).MatchString(s) {
		return fmt.Errorf("value does not look like a valid MAC address")
	}
	return nil
}

func diskSize(s string) error {
	if !regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT])?$`).MatchString(s) {
		return fmt.Errorf("unable to parse size '%s'", s)
	}
	return nil
}

func configIDList(s string) error {
	for _, k := range splitList(s) {
		if !regexp.MustCompile(`^[a-z][a-z0-9_.\-]+$`).MatchString(k) {
			return fmt.Errorf("invalid configuration ID '%s'", k)
		}
	}
	return nil
}

// ---- the CT schema (PVE::LXC::Config confdesc and create_vm) ----

var (
	boolean = &param{typ: tBoolean}
	str     = &param{typ: tString}

	netFormat = &propString{
		props: map[string]*param{
			"name":         {typ: tString, format: func(s string) error { return patternErr(`^[-_.\w\d]+$`, s) }},
			"bridge":       {typ: tString, format: func(s string) error { return patternErr(`^[-_.\w\d]+$`, s) }},
			"hwaddr":       {typ: tString, format: macAddr},
			"ip":           {typ: tString, format: ipv4Config},
			"gw":           {typ: tString, format: ipv4},
			"ip6":          {typ: tString, format: ipv6Config},
			"gw6":          {typ: tString, format: ipv6},
			"firewall":     boolean,
			"link_down":    boolean,
			"mtu":          {typ: tInteger, min: num(64), max: num(65535)},
			"rate":         {typ: tNumber, min: num(0)},
			"tag":          {typ: tInteger, min: num(1), max: num(4094)},
			"trunks":       str,
			"type":         {typ: tString, enum: []string{"veth"}},
			"host-managed": {typ: tBoolean, since91: true},
		},
		required: []string{"name"},
	}
	rootfsProps = map[string]*param{
		"volume":       {typ: tString, format: mpVolumeFormat},
		"size":         {typ: tString, format: diskSize},
		"acl":          boolean,
		"quota":        boolean,
		"replicate":    boolean,
		"ro":           boolean,
		"shared":       boolean,
		"mountoptions": str,
		"idmap":        {typ: tString, since92: true},
	}
	rootfsFormat = &propString{defaultKey: "volume", props: rootfsProps, required: []string{"volume"}}
	mpFormat     = &propString{
		defaultKey: "volume",
		props: merge(rootfsProps, map[string]*param{
			"mp":        {typ: tString, format: mpPath},
			"backup":    boolean,
			"keepattrs": {typ: tBoolean, since92: true},
		}),
		required: []string{"volume", "mp"},
	}
	featuresFormat = &propString{props: map[string]*param{
		"fuse": boolean, "keyctl": boolean, "mknod": boolean, "nesting": boolean,
		"force_rw_sys": boolean, "mount": str,
	}}
	startupFormat = &propString{props: map[string]*param{
		"order": {typ: tInteger, min: num(0)}, "up": {typ: tInteger, min: num(0)}, "down": {typ: tInteger, min: num(0)},
	}}
)

// envList is confdesc's env pattern: NAME=VALUE, NUL-separated.
func envList(s string) error {
	for _, e := range strings.Split(s, "\x00") {
		if lxc.CheckEnvVar(e) != nil {
			return fmt.Errorf("value does not match the regex pattern")
		}
	}
	return nil
}

// noControl is confdesc's entrypoint pattern.
func noControl(s string) error {
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fmt.Errorf("value does not match the regex pattern")
		}
	}
	return nil
}

func patternErr(pattern, s string) error {
	if !regexp.MustCompile(pattern).MatchString(s) {
		return fmt.Errorf("value does not match the regex pattern")
	}
	return nil
}

func merge(a, b map[string]*param) map[string]*param {
	out := map[string]*param{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

var osTypes = []string{"debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "openeuler", "unmanaged"}

var archs = []string{"amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"}

// configProps are the CT config keys settable by create and set.
func configProps() map[string]*param {
	return map[string]*param{
		"arch":        {typ: tString, enum: archs},
		"cmode":       {typ: tString, enum: []string{"shell", "console", "tty"}},
		"console":     boolean,
		"cores":       {typ: tInteger, min: num(1), max: num(8192)},
		"cpulimit":    {typ: tNumber, min: num(0), max: num(8192)},
		"cpuunits":    {typ: tInteger, min: num(0), max: num(500000)},
		"debug":       boolean,
		"description": {typ: tString, maxLength: 8192},
		"entrypoint":  {typ: tString, since91: true, format: noControl},
		// Not a "-list" format: pct's get_options keeps only the last of
		// repeated --env options, and so does the stand-in.
		"env":          {typ: tString, since91: true, format: envList},
		"features":     {typ: tString, sub: featuresFormat},
		"hookscript":   str,
		"hostname":     {typ: tString, maxLength: 255, format: dnsName},
		"memory":       {typ: tInteger, min: num(16)},
		"nameserver":   str,
		"onboot":       boolean,
		"ostype":       {typ: tString, enum: osTypes},
		"protection":   boolean,
		"rootfs":       {typ: tString, sub: rootfsFormat},
		"searchdomain": str,
		"startup":      {typ: tString, sub: startupFormat},
		"swap":         {typ: tInteger, min: num(0)},
		"tags":         str,
		"template":     boolean,
		"timezone":     str,
		"tty":          {typ: tInteger, min: num(0), max: num(6)},
	}
}

func indexedProps() map[string]struct {
	max int
	p   *param
} {
	return map[string]struct {
		max int
		p   *param
	}{
		"mp":  {maxMP, &param{typ: tString, sub: mpFormat}},
		"net": {maxNet, &param{typ: tString, sub: netFormat}},
	}
}

// createSchema is `pct create`'s options (besides vmid and ostemplate).
func createSchema() *schema {
	p := configProps()
	p["password"] = &param{typ: tString, minLength: 5}
	p["ssh-public-keys"] = str
	p["storage"] = &param{typ: tString, format: storageID}
	p["start"] = boolean
	p["pool"] = str
	p["unprivileged"] = boolean
	p["force"] = boolean
	p["restore"] = boolean
	p["unique"] = boolean
	p["ignore-unpack-errors"] = boolean
	p["bwlimit"] = &param{typ: tNumber, min: num(0)}
	return &schema{fixed: p, indexed: indexedProps()}
}

// setSchema is `pct set`'s options.
func setSchema() *schema {
	p := configProps()
	delete(p, "template")
	p["delete"] = &param{typ: tString, format: configIDList}
	p["revert"] = &param{typ: tString, format: configIDList}
	p["digest"] = &param{typ: tString, maxLength: 40}
	idx := indexedProps()
	idx["unused"] = struct {
		max int
		p   *param
	}{maxMP, str}
	return &schema{fixed: p, indexed: idx}
}

var vmidParam = &param{typ: tInteger, min: num(100), max: num(999999999)}

// ---- command line ----

// cliArgs is a parsed command line.
type cliArgs struct {
	pos   []string
	opts  map[string]string
	order []string // option names, first appearance first
	rest  []string // after "--"
}

func (a *cliArgs) has(k string) bool { _, ok := a.opts[k]; return ok }

// parseCLI splits a PVE command line into positional arguments and
// options, as get_options does with Getopt::Long: "--opt value",
// "-opt value", "--opt=value"; options and arguments may mix; boolean
// options may omit their value; "--" ends the options. Unknown options and
// bad values become parameter errors (the API's schema check).
func parseCLI(args []string, s *schema, v version, errs *paramError) (*cliArgs, error) {
	a := &cliArgs{opts: map[string]string{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			a.rest = args[i+1:]
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" || integerRE.MatchString(arg) {
			a.pos = append(a.pos, arg)
			continue
		}
		name := strings.TrimLeft(arg, "-")
		if strings.HasPrefix(arg, "---") || name == "" {
			return nil, fmt.Errorf("Unknown option: %s\n400 unable to parse option", strings.TrimPrefix(arg, "--"))
		}
		value, hasValue := "", false
		if k, val, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, val, true
		}
		p := s.lookup(name, v)
		if !hasValue {
			takesNext := i+1 < len(args)
			if p == nil || p.typ == tBoolean {
				// Optional value (Getopt ":s"): only a following
				// non-option is taken.
				takesNext = takesNext && !strings.HasPrefix(args[i+1], "-")
			}
			switch {
			case takesNext:
				i++
				value = args[i]
			case p != nil && p.typ == tBoolean:
				value = "1"
			case p != nil:
				return nil, fmt.Errorf("Option %s requires an argument\n400 unable to parse option", name)
			}
		}
		if p == nil {
			errs.add(name, notInSchema)
			continue
		}
		if old, ok := a.opts[name]; ok && p.list {
			value = old + "\x00" + value
		}
		if _, ok := a.opts[name]; !ok {
			a.order = append(a.order, name)
		}
		a.opts[name] = value
	}
	// Check every value once all are known (list values per element).
	for _, name := range a.order {
		p := s.lookup(name, v)
		if p.list {
			var vals []string
			for _, x := range strings.Split(a.opts[name], "\x00") {
				vals = append(vals, check(errs, name, x, p, v))
			}
			a.opts[name] = strings.Join(vals, "\x00")
			continue
		}
		a.opts[name] = check(errs, name, a.opts[name], p, v)
	}
	return a, nil
}

// parseVMID checks a vmid argument against pve-vmid.
func parseVMID(errs *paramError, s string, v version) int {
	check(errs, "vmid", s, vmidParam, v)
	if errs.has("vmid") {
		return 0
	}
	id, _ := strconv.Atoi(strings.TrimPrefix(s, "+"))
	return id
}
