// Package pct talks to a Proxmox VE host through its own tools (pct,
// pvesm, pvesh, pveversion) run as argv, never through a shell: it
// validates a deploy before anything changes, maps PVE's messages to
// typed errors, and undoes a half-made container.
package pct

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Sentinels for errors.Is on an *Error.
var (
	ErrAlreadyExists   = errors.New("already exists")
	ErrNotFound        = errors.New("not found")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrPermission      = errors.New("permission denied")
	ErrStorage         = errors.New("storage error")
	ErrTimeout         = errors.New("timeout")
	ErrFailed          = errors.New("pve command failed")
)

// Error is a failure of a PVE command, or a request PVE would refuse.
type Error struct {
	Kind error
	// Param is the PVE parameter at fault, for invalid arguments
	// ("hostname").
	Param string
	Msg   string // one line: what is wrong
	Fix   string // what to do about it
	// Fields are the Options fields Msg and Fix name by their Go name
	// ("VMID", "AllowTemplateMounts"), so that a front end can show them
	// its own way (a command line as its flags).
	Fields []string
	// Raw is the command line and PVE's own output.
	Raw string
}

func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Fix
}

func (e *Error) Is(target error) bool { return target == e.Kind }

func newError(kind error, param, msg, fix string, fields ...string) *Error {
	return &Error{Kind: kind, Param: param, Msg: msg, Fix: fix, Fields: fields}
}

// fixVMIDTaken is the fix for a VMID already in use.
const fixVMIDTaken = "choose another VMID, or leave VMID unset for the next free one"

var (
	reExists       = regexp.MustCompile(`(?:CT|VM) (\d+) already exists on node '([^']+)'`)
	reVMIDTaken    = regexp.MustCompile(`vmid: VM (\d+) already exists`)
	reTask         = regexp.MustCompile(`unable to create CT (\d+) - (.*)`)
	reParam        = regexp.MustCompile(`^([a-z][a-z0-9_-]*\d*): (.+)$`)
	reNoFile       = regexp.MustCompile(`can't find file '([^']+)'`)
	reNoStorage    = regexp.MustCompile(`storage '([^']+)' does not exist`)
	reDisabled     = regexp.MustCompile(`storage '([^']+)' is disabled`)
	reNotOnNode    = regexp.MustCompile(`storage '([^']+)' is not available on node '([^']+)'`)
	reNoNode       = regexp.MustCompile(`no such cluster node '([^']+)'`)
	reNoConfig     = regexp.MustCompile(`Configuration file '[^']*?(\d+)\.conf' does not exist`)
	reVolName      = regexp.MustCompile(`unable to parse directory volume name '([^']+)'`)
	reContentType  = regexp.MustCompile(`content type needs to be '([^']+)'`)
	reDetectOS     = regexp.MustCompile(`unable to detect OS distribution`)
	reNoFreeVMID   = regexp.MustCompile(`unable to get any free VMID`)
	reRootfsNotSet = regexp.MustCompile(`mount points configured, but 'rootfs' not set`)
)

// fixes for PVE's parameter messages, by parameter; paramField names the
// Options field each one is about.
var paramFix = map[string]string{
	"hostname":   "use a DNS name: letters, digits and '-', dot-separated (Hostname)",
	"memory":     "give at least 16 MiB (Memory)",
	"password":   "use at least 5 characters (Password)",
	"vmid":       "use 100 to 999999999 (VMID), or leave VMID unset for the next free one",
	"cores":      "use 1 to 8192 (Cores)",
	"entrypoint": "this PVE is older than 9.1 and has no application containers; upgrade, or nexcage writes lxc.init.cmd instead when it knows the version",
}

var paramField = map[string]string{"hostname": "Hostname", "memory": "Memory", "password": "Password", "vmid": "VMID", "cores": "Cores"}

// pveMessages map PVE's messages, tried in order, to errors; m is the
// match and its groups.
var pveMessages = []struct {
	re  *regexp.Regexp
	err func(m []string) *Error
}{
	{reExists, func(m []string) *Error {
		return newError(ErrAlreadyExists, "vmid", fmt.Sprintf("CT %s already exists on node '%s'", m[1], m[2]), fixVMIDTaken, "VMID")
	}},
	{reVMIDTaken, func(m []string) *Error {
		return newError(ErrAlreadyExists, "vmid", fmt.Sprintf("VM or CT %s already exists", m[1]), fixVMIDTaken, "VMID")
	}},
	{reNoFile, func(m []string) *Error {
		return newError(ErrNotFound, "ostemplate", fmt.Sprintf("template %s not found on the host", m[1]), "upload it (a deploy of a local file does) or check the volume id with `pvesm list STORAGE`")
	}},
	{reNoStorage, func(m []string) *Error {
		return newError(ErrNotFound, "storage", fmt.Sprintf("storage '%s' does not exist", m[1]), "name one of `pvesm status`")
	}},
	{reDisabled, func(m []string) *Error {
		return newError(ErrStorage, "storage", fmt.Sprintf("storage '%s' is disabled", m[1]), "enable it (`pvesm set STORAGE --disable 0`) or choose another")
	}},
	{reNotOnNode, func(m []string) *Error {
		return newError(ErrStorage, "storage", fmt.Sprintf("storage '%s' is not available on node '%s'", m[1], m[2]), "choose a storage of that node, or another Node", "Node")
	}},
	{reNoNode, func(m []string) *Error {
		return newError(ErrNotFound, "node", fmt.Sprintf("node '%s' is not in this cluster", m[1]), "name one of `pvesh get /nodes`")
	}},
	{reNoConfig, func(m []string) *Error {
		return newError(ErrNotFound, "vmid", fmt.Sprintf("CT %s does not exist", m[1]), "check the VMID with `pct list`")
	}},
	{reVolName, func(m []string) *Error {
		return newError(ErrInvalidArgument, "ostemplate", fmt.Sprintf("PVE does not take '%s' as a template name", m[1]), "templates end in .tar.zst, .tar.gz, .tar.xz or .tar.bz2")
	}},
	{reContentType, func(m []string) *Error {
		return newError(ErrStorage, "storage", fmt.Sprintf("the storage does not hold %s content", m[1]), "use a storage whose content includes "+m[1])
	}},
	{reDetectOS, func(m []string) *Error {
		return newError(ErrFailed, "ostype", "PVE cannot detect the template's OS distribution", "deploy the template with the .conf nexcage wrote beside it, which records ostype unmanaged for a rootfs PVE cannot set up (rebuild it with nexcage if the .conf is gone)")
	}},
	{reNoFreeVMID, func(m []string) *Error {
		return newError(ErrFailed, "vmid", "no free VM id left in the cluster", "destroy unused containers or set VMID", "VMID")
	}},
	{reRootfsNotSet, func(m []string) *Error {
		return newError(ErrInvalidArgument, "rootfs", "mount points need a rootfs volume", "set Storage and RootfsSize", "Storage", "RootfsSize")
	}},
}

// MapError turns a failed PVE command's output into an *Error.
func MapError(argv []string, stderr string, code int) *Error {
	raw := fmt.Sprintf("$ %s\n%s(exit status %d)", ShellQuote(argv), stderr, code)
	e := mapMessage(stderr)
	e.Raw = raw
	return e
}

func mapMessage(stderr string) *Error {
	text := strings.TrimSpace(stderr)
	if m := reTask.FindStringSubmatch(text); m != nil {
		inner := mapMessage(m[2])
		if inner.Kind == ErrFailed {
			inner.Msg = fmt.Sprintf("PVE could not create CT %s: %s", m[1], m[2])
		}
		return inner
	}
	switch {
	case strings.Contains(text, "please run as root"):
		return newError(ErrPermission, "", "PVE's tools refuse to run: they need root", "run nexcage as root on the Proxmox host")
	case strings.HasPrefix(text, "400 Parameter verification failed."):
		return paramError(text)
	}
	for _, pm := range pveMessages {
		if m := pm.re.FindStringSubmatch(text); m != nil {
			return pm.err(m)
		}
	}
	return newError(ErrFailed, "", lastLine(text), fixSeeRaw, "Raw")
}

// paramError reads PVE's "400 Parameter verification failed." block: one
// "param: message" line per bad parameter.
func paramError(text string) *Error {
	var params, msgs, fixes, fields []string
	for _, l := range strings.Split(text, "\n")[1:] {
		m := reParam.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		if strings.HasPrefix(m[2], "VM ") && strings.HasSuffix(m[2], "already exists") {
			return newError(ErrAlreadyExists, m[1], fmt.Sprintf("that VM id is already in use (%s)", m[2]), fixVMIDTaken, "VMID")
		}
		params = append(params, m[1])
		msgs = append(msgs, m[1]+": "+m[2])
		p := strings.TrimRight(m[1], "0123456789")
		if f := paramFix[p]; f != "" {
			fixes = append(fixes, f)
			if paramField[p] != "" {
				fields = append(fields, paramField[p])
			}
		}
	}
	if len(params) == 0 {
		return newError(ErrInvalidArgument, "", "PVE refused the parameters", fixSeeRaw, "Raw")
	}
	fix := strings.Join(fixes, "; ")
	if fix == "" {
		fix = "correct the option"
	}
	return newError(ErrInvalidArgument, strings.Join(params, ","), "PVE refused "+strings.Join(msgs, "; "), fix, fields...)
}

// fixSeeRaw points at the Error's Raw: PVE's own words.
const fixSeeRaw = "see PVE's own output (Raw)"

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// ShellQuote renders argv for a human to copy into a shell; control
// characters (the NULs of --env) use bash's $'...' quoting.
func ShellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		switch {
		case a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@+%") == "":
			out[i] = a
		case strings.IndexFunc(a, func(r rune) bool { return r < 0x20 }) >= 0:
			var b strings.Builder
			b.WriteString("$'")
			for _, r := range a {
				switch {
				case r == '\\' || r == '\'':
					b.WriteString("\\" + string(r))
				case r < 0x20:
					fmt.Fprintf(&b, "\\x%02x", r)
				default:
					b.WriteRune(r)
				}
			}
			b.WriteString("'")
			out[i] = b.String()
		default:
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
