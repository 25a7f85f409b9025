package pveapi

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Kind classifies an *Error; errors.Is(err, pveapi.Forbidden) matches any
// *Error (or *TaskError) of that kind.
type Kind int

const (
	// Failed is any other refusal or failure PVE reports.
	Failed Kind = iota
	// Unauthorized: the token, or user and password, were not accepted (401).
	Unauthorized
	// Forbidden: the user lacks a privilege (403); Error.Privilege names it.
	Forbidden
	// BadParam: PVE refused parameters (400); Error.Params has one message
	// per parameter.
	BadParam
	// NotFound: a node, storage, container, volume or API path is not there.
	NotFound
	// AlreadyExists: the VMID or file is taken.
	AlreadyExists
	// Connection: the server could not be reached (refused, no route, DNS),
	// or PVE could not reach the node it proxies to.
	Connection
	// Timeout: no answer in time.
	Timeout
	// TLS: the server's certificate is not trusted, or does not match the
	// pinned fingerprint; Error.Fingerprint is the one it presented.
	TLS
	// BadConfig: the client's configuration is refused before any request
	// (plain http to a remote host, a malformed token or URL).
	BadConfig
	// Protocol: the server answered something that is not PVE's API
	// (not JSON, too large, a redirect).
	Protocol
)

var kindNames = [...]string{
	Failed:        "failed",
	Unauthorized:  "unauthorized",
	Forbidden:     "forbidden",
	BadParam:      "bad parameter",
	NotFound:      "not found",
	AlreadyExists: "already exists",
	Connection:    "connection failed",
	Timeout:       "timeout",
	TLS:           "TLS",
	BadConfig:     "invalid configuration",
	Protocol:      "protocol error",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error makes a Kind usable as an errors.Is target.
func (k Kind) Error() string { return k.String() }

// Error is a failed API request, or a request refused before it was sent.
// No field ever holds the token secret, the password or the ticket.
type Error struct {
	Kind   Kind
	Status int    // HTTP status, 0 when there was no answer
	Method string // GET, POST, PUT, DELETE
	Path   string // API path below /api2/json ("/nodes/pve/lxc")
	// Msg says what is wrong; Fix what to do about it.
	Msg, Fix string
	// Params are PVE's per-parameter messages of a 400 answer.
	Params map[string]string
	// Privilege and ACLPath are what a 403 says is missing
	// ("Datastore.AllocateTemplate" on "/storage/local"); when any of
	// several would do, Privilege lists them as PVE does, "A|B".
	Privilege, ACLPath string
	// Fingerprint is the SHA-256 fingerprint of the certificate the server
	// presented, for TLS errors ("AA:BB:...").
	Fingerprint string
	// Err is the underlying cause (a net or TLS error), scrubbed of secrets.
	Err error
}

func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Fix
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches a Kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

var (
	// One privilege, or any of several ("A|B"), on an ACL path.
	rePerm     = regexp.MustCompile(`Permission check failed \(([^,()]+), ([A-Za-z]+\.[A-Za-z.]+(?:\|[A-Za-z]+\.[A-Za-z.]+)*)\)`)
	rePermText = regexp.MustCompile(`Permission check failed(?: \(([^()]*)\))?`)
	reExists   = regexp.MustCompile(`already exists`)
	reNotFound = regexp.MustCompile(`(?i)does not exist|no such |not found|can't find|unable to find|not exist`)
	// PVE's proxy between nodes answers 595/596 when it cannot reach the
	// node that owns the path.
	reNoRoute = regexp.MustCompile(`(?i)no route to host|connection refused|connection timed out|node .* seems to be offline`)
)

// classify returns the kind PVE's message and HTTP status mean.
func classify(status int, msg string, params map[string]string) Kind {
	switch {
	case status == 401:
		return Unauthorized
	case status == 403:
		return Forbidden
	case status == 404:
		return NotFound
	case status == 595 || status == 596:
		return Connection
	}
	text := msg
	for _, v := range params {
		text += "\n" + v
	}
	switch {
	case reExists.MatchString(text):
		return AlreadyExists
	case status == 400:
		return BadParam
	case reNotFound.MatchString(text):
		return NotFound
	case reNoRoute.MatchString(text):
		return Connection
	}
	return Failed
}

// responseError builds the *Error for a non-2xx answer. what is the
// request in words ("create CT 100 on node 'pve'").
func responseError(method, path, what string, status int, msg string, params map[string]string, tokenAuth bool) *Error {
	msg = oneLine(msg)
	e := &Error{Kind: classify(status, msg, params), Status: status, Method: method, Path: path, Params: params}
	if len(params) > 0 {
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+": "+oneLine(params[k]))
		}
		detail := strings.Join(parts, "; ")
		if msg == "" || strings.HasPrefix(msg, "Parameter verification failed") {
			msg = detail
		} else {
			msg += " (" + detail + ")"
		}
	}
	if msg == "" {
		msg = fmt.Sprintf("HTTP status %d", status)
	}
	e.Msg = fmt.Sprintf("cannot %s: %s", what, msg)
	switch e.Kind {
	case Unauthorized:
		e.Msg = fmt.Sprintf("PVE did not accept the credentials to %s (%s)", what, msg)
		if tokenAuth {
			e.Fix = "check the API token (USER@REALM!TOKENID=SECRET): that the token exists, has not expired and its secret is the one PVE showed when it was made"
		} else {
			e.Fix = "check the user (USER@REALM) and its password"
		}
	case Forbidden:
		if m := rePerm.FindStringSubmatch(msg); m != nil {
			e.ACLPath, e.Privilege = m[1], m[2]
			privs := "the privilege " + e.Privilege
			if strings.Contains(e.Privilege, "|") {
				privs = "each of the privileges " + strings.ReplaceAll(e.Privilege, "|", ", ") + " (one is enough)"
			}
			e.Msg = fmt.Sprintf("cannot %s: the API user lacks %s on %s", what, privs, e.ACLPath)
			e.Fix = fmt.Sprintf("grant the user a role that includes %s on %s (an API token with privilege separation needs the grant on the token itself)", strings.ReplaceAll(e.Privilege, "|", " or "), e.ACLPath)
		} else if m := rePermText.FindStringSubmatch(msg); m != nil && m[1] != "" {
			e.Msg = fmt.Sprintf("cannot %s: PVE refuses it to this user (%s)", what, m[1])
			e.Fix = "do this as a user PVE allows it to, or on the host"
			if strings.Contains(m[1], "root@pam") {
				// API tokens are never root@pam itself, even root's own.
				e.Fix = "only root@pam may do this, logged in with its password rather than an API token; or do it on the host"
			}
		} else {
			e.Fix = "grant the API user the privileges this needs"
		}
	case BadParam:
		e.Fix = "correct the parameters PVE names"
	case AlreadyExists:
		e.Fix = "choose another VMID or name, or remove the existing one"
	case NotFound:
		e.Fix = "check the name against the cluster's nodes, storages and containers"
	case Connection:
		e.Fix = "check that the node is online and reachable from the node the API answers on"
	default:
		if status == 501 {
			e.Fix = "this PVE release does not have that API call; upgrade it"
		} else {
			e.Fix = "see PVE's message; the task log on the node may say more"
		}
	}
	return e
}

// oneLine trims PVE's message (which ends in "\n") to a single line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		rest := strings.Fields(s[i+1:])
		s = s[:i]
		if len(rest) > 0 {
			s += " " + strings.Join(rest, " ")
		}
	}
	return clip(s, 1024)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// TaskError is a PVE task (create, start, upload's copy) that ended with
// an exit status other than OK.
type TaskError struct {
	Kind       Kind // from the exit status: AlreadyExists, NotFound or Failed
	Node, UPID string
	Type, ID   string // the task's type ("vzcreate") and object ("100")
	ExitStatus string
	// Log is the last lines of the task's log, at most TaskLogLines.
	Log []string
}

func (e *TaskError) Error() string {
	what := e.Type
	if e.ID != "" {
		what += " " + e.ID
	}
	msg := fmt.Sprintf("PVE task %s on node '%s' failed: %s", what, e.Node, oneLine(e.ExitStatus))
	if n := len(e.Log); n > 0 {
		msg += " (last log line: " + oneLine(e.Log[n-1]) + ")"
	}
	return msg + ": see the task log on the node for the whole story"
}

// Is matches a Kind.
func (e *TaskError) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}
