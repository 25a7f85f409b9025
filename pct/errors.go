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

// pveMessage maps one of PVE's messages to an error: msg and fix may name
// the match's groups as ${1}, ${2} (regexp's Expand).
type pveMessage struct {
	re       *regexp.Regexp
	kind     error
	param    string
	msg, fix string
	fields   []string
}

// pveMessages are tried in order.
var pveMessages = []pveMessage{
	{reExists, ErrAlreadyExists, "vmid", "CT ${1} already exists on node '${2}'", fixVMIDTaken, []string{"VMID"}},
	{reVMIDTaken, ErrAlreadyExists, "vmid", "VM or CT ${1} already exists", fixVMIDTaken, []string{"VMID"}},
	{reNoFile, ErrNotFound, "ostemplate", "template ${1} not found on the host", "upload it (a deploy of a local file does) or check the volume id with `pvesm list STORAGE`", nil},
	{reNoStorage, ErrNotFound, "storage", "storage '${1}' does not exist", "name one of `pvesm status`", nil},
	{reDisabled, ErrStorage, "storage", "storage '${1}' is disabled", "enable it (`pvesm set STORAGE --disable 0`) or choose another", nil},
	{reNotOnNode, ErrStorage, "storage", "storage '${1}' is not available on node '${2}'", "choose a storage of that node, or another Node", []string{"Node"}},
	{reNoNode, ErrNotFound, "node", "node '${1}' is not in this cluster", "name one of `pvesh get /nodes`", nil},
	{reNoConfig, ErrNotFound, "vmid", "CT ${1} does not exist", "check the VMID with `pct list`", nil},
	{reVolName, ErrInvalidArgument, "ostemplate", "PVE does not take '${1}' as a template name", "templates end in .tar.zst, .tar.gz, .tar.xz or .tar.bz2", nil},
	{reContentType, ErrStorage, "storage", "the storage does not hold ${1} content", "use a storage whose content includes ${1}", nil},
	{reDetectOS, ErrFailed, "ostype", "PVE cannot detect the template's OS distribution", "deploy the template with the .conf nexcage wrote beside it, which records ostype unmanaged for a rootfs PVE cannot set up (rebuild it with nexcage if the .conf is gone)", nil},
	{reNoFreeVMID, ErrFailed, "vmid", "no free VM id left in the cluster", "destroy unused containers or set VMID", []string{"VMID"}},
	{reRootfsNotSet, ErrInvalidArgument, "rootfs", "mount points need a rootfs volume", "set Storage and RootfsSize", []string{"Storage", "RootfsSize"}},
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
		if m := pm.re.FindStringSubmatchIndex(text); m != nil {
			expand := func(tmpl string) string { return string(pm.re.ExpandString(nil, tmpl, text, m)) }
			return newError(pm.kind, pm.param, expand(pm.msg), expand(pm.fix), pm.fields...)
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
