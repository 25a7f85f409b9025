// Package health is what the checks of `nexcage check` share across
// stages: the result of one check and its statuses, the options every
// check takes, and the judging of leftovers of interrupted writes
// (temporary names a killed writer left), which a repair removes.
// rootfs (the store), convert (templates, bundles, directories) and pct
// (PVE storages) return the same Result, so the command renders every
// check alike. It imports no stage.
package health

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/progress"
)

// Statuses of a Result.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Result is the outcome of one check, rendered by `nexcage check` as
// "STATUS  TARGET: CHECK[: CAUSE; FIX]" and, with --json, as these fields.
type Result struct {
	Status string `json:"status"` // OK, Warn or Fail
	Check  string `json:"check"`  // what was checked
	Target string `json:"target"`
	Cause  string `json:"cause"` // for warn and fail: what is wrong; for a repair: what was wrong
	Fix    string `json:"fix"`   // for warn and fail: what to do; for a repair: what was done
	// Repaired says Options.Repair fixed the problem (the status is then
	// ok).
	Repaired bool `json:"repaired"`
	// Repair, on a warn or fail that a check with Options.Repair fixes,
	// is what the repair does ("removes it"); Fix is then any other way
	// out, or empty. Advice joins the two.
	Repair string `json:"repair,omitempty"`
	// Remedy names the other way out Fix describes, for a front end to
	// name its own command for it.
	Remedy Remedy `json:"remedy,omitempty"`
	// Fields are the option fields Fix names by their Go names,
	// comma-separated ("SquashHighIDs,Privileged"), for a front end to
	// name its own way (a flag).
	Fields string `json:"-"`
}

// Remedy is a way out of a problem that a front end names its own way
// (a command line as a command to run).
type Remedy string

const (
	// Redeploy: deploy the local template file again, replacing the one
	// in the storage.
	Redeploy Remedy = "redeploy"
	// Rebuild: build (or convert) the template again.
	Rebuild Remedy = "rebuild"
	// NewBundle: make an OCI bundle (unpack an image, or generate one).
	NewBundle Remedy = "bundle"
)

// Advice is what to do about r in one sentence: the repair, named as how
// ("a check with Repair", a command), then Fix.
func (r Result) Advice(how string) string {
	if r.Repair == "" || r.Repaired {
		return r.Fix
	}
	a := how + " " + r.Repair
	if r.Fix != "" {
		a += "; " + r.Fix
	}
	return a
}

// Options configure a check.
type Options struct {
	// Repair fixes what the check can: it removes leftovers of interrupted
	// writes, and whatever else the stage's check says.
	Repair bool
	// InUse reports whether a running process still has path (or, for a
	// directory, something below it) open: a temporary name that is being
	// written is not a leftover. Nil means nothing is in use.
	InUse func(path string) bool
}

func (o Options) inUse(p string) bool { return o.InUse != nil && o.InUse(p) }

// Leftover is one temporary name an interrupted write left, and the words
// its result is reported in.
type Leftover struct {
	Path   string // the file or directory
	Target string // the target the result is about
	Check  string // e.g. "leftover NAME"
	Cause  string // what it is
	// Busy is appended to Check when a running process still has Path
	// open, e.g. ": being written by a running process, left alone".
	Busy string
	// Fix is the warning's way out besides a repair (which removes it),
	// or empty.
	Fix string
	// ByHand is the fix when removing it fails.
	ByHand string
}

// Judge reports the leftover: ok and left alone while a running process
// has it open; a warning without Repair; with Repair it is removed (ok,
// Repaired), or a failure when that fails.
func (l Leftover) Judge(opts Options) Result {
	r := Result{Status: OK, Check: l.Check, Target: l.Target}
	switch {
	case opts.inUse(l.Path):
		r.Check += l.Busy
	case !opts.Repair:
		r.Status, r.Cause, r.Fix, r.Repair = Warn, l.Cause, l.Fix, "removes it"
	default:
		if err := atomicfile.RemoveTree(l.Path); err != nil {
			r.Status, r.Cause, r.Fix = Fail, l.Cause+"; removing it failed: "+err.Error(), l.ByHand
		} else {
			r.Cause, r.Fix, r.Repaired = l.Cause, "removed it", true
		}
	}
	return r
}

// Leftovers reports the names in dir that match (and, when deep, the
// names below it, not descending into a match): temporaries a killed
// writer left. Each is a "leftover REL" result for target, judged by
// Leftover.Judge; when there is none, one ok result says so for where
// ("the store", "the directory", ...). dir itself is followed when it is
// a symbolic link; links below it are not.
func Leftovers(dir string, match func(name string) bool, deep bool, target, where string, opts Options) []Result {
	var found []string // relative to dir
	var scan func(rel string)
	scan = func(rel string) {
		ents, _ := os.ReadDir(filepath.Join(dir, rel))
		for _, e := range ents {
			p := filepath.Join(rel, e.Name())
			switch {
			case match(e.Name()):
				found = append(found, p)
			case deep && e.IsDir():
				scan(p)
			}
		}
	}
	scan("")
	if len(found) == 0 {
		return []Result{{Status: OK, Check: "no leftovers of interrupted writes in " + where, Target: target}}
	}
	sort.Strings(found)
	out := make([]Result, 0, len(found))
	for _, rel := range found {
		p := filepath.Join(dir, rel)
		out = append(out, Leftover{
			Path:   p,
			Target: target,
			Check:  "leftover " + rel,
			Cause:  fmt.Sprintf("temporary %s of an interrupted write (%s)", kind(p), progress.HumanBytes(atomicfile.TreeSize(p))),
			Busy:   ": being written by a running process, left alone",
			ByHand: "remove " + p + " by hand",
		}.Judge(opts))
	}
	return out
}

func kind(p string) string {
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return "directory"
	}
	return "file"
}
