package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

// The libraries say what is wrong and what a Go program can do about it
// in their own words (an Options field, "insecure registries"); what a
// command-line user types is a flag, so the hints naming flags and
// commands are added here, from the libraries' typed errors, in one place:
// run's error branch (and build's per-image results) call hint.

// hint adds to err the flags or commands that fix it. It is idempotent:
// a message already hinted is left alone, so a command that hinted an
// error itself (build's per-image results) is not hinted twice.
func hint(e *env, err error) error {
	if err == nil {
		return nil
	}
	var h *hinted
	if errors.As(err, &h) {
		return err
	}
	for _, f := range []func(*env, error) error{pctHint, remoteHint, rootfsHint, notStoredHint1, convertHint, processHint1, limitHint, pruneHint} {
		err = f(e, err)
	}
	return err
}

// notStoredHint1 is notStoredHint in hint's shape.
func notStoredHint1(_ *env, err error) error { return notStoredHint(err) }

// processHint1 is processHint in hint's shape.
func processHint1(_ *env, err error) error { return processHint(err) }

// withHint returns err with its message msg, when msg differs.
func withHint(err error, msg string) error {
	if msg == err.Error() {
		return err
	}
	return &hinted{err: err, msg: msg}
}

// suffixHint appends ": "+s to err's message, unless it already says s.
func suffixHint(err error, s string) error {
	if strings.Contains(err.Error(), s) {
		return err
	}
	return withHint(err, err.Error()+": "+s)
}

// hasFlag reports whether the running command has flag (without "--").
func (e *env) hasFlag(flag string) bool {
	return e != nil && e.flags != nil && e.flags.Lookup(flag) != nil
}

func rootfsHint(e *env, err error) error {
	var pe *rootfs.PlatformError
	switch {
	case errors.As(err, &pe):
		var cli string
		switch {
		case pe.Single:
			cli = fmt.Sprintf("%s is a single-platform image for %s, not %s: pass --platform %s to use it anyway", pe.Image, pe.Offered[0], pe.Want, pe.Offered[0])
		case len(pe.Offered) > 0:
			cli = fmt.Sprintf("%s has no image for %s; it has %s: pass --platform with one of them", pe.Image, pe.Want, strings.Join(pe.Offered, ", "))
		default:
			return err
		}
		return withHint(err, strings.Replace(err.Error(), pe.Error(), cli, 1))
	case errors.Is(err, rootfs.ErrPlainHTTP):
		return suffixHint(err, "pass --insecure to allow it")
	case errors.Is(err, rootfs.ErrUntrustedCert):
		if strings.Contains(err.Error(), "--insecure") {
			return err
		}
		return withHint(err, err.Error()+" (--insecure)")
	case errors.Is(err, rootfs.ErrRegistryTimeout) && e.hasFlag("timeout"):
		return suffixHint(err, "raise --timeout")
	case errors.Is(err, rootfs.ErrStoreDir):
		return suffixHint(err, "name one with --store or NEXCAGE_STORE")
	}
	return err
}

func convertHint(e *env, err error) error {
	var ne *template.NameError
	var ee *atomicfile.ExistsError
	switch {
	case errors.Is(err, convert.ErrNotBundle):
		return suffixHint(err, "make one with `nexcage unpack IMAGE DIR` or `nexcage generate`")
	case errors.Is(err, template.ErrUnnamed) && e.hasFlag("name"):
		return suffixHint(err, "pass --name (and --template-version), or -o FILE")
	case errors.As(err, &ne) && e.hasFlag("name"):
		return suffixHint(err, "pass --name and --template-version with letters or digits")
	case errors.As(err, &ee) && !ee.NotDir:
		cli := fmt.Sprintf("bundle directory %s is not empty: choose a new directory, or pass --force to replace its contents", ee.Path)
		return withHint(err, strings.Replace(err.Error(), ee.Error(), cli, 1))
	case errors.Is(err, convert.ErrProcessUser):
		return suffixHint(err, "pass --privileged for a privileged-only template, --squash-high-ids to run it as 65534 (nobody), or --user to choose another user")
	case errors.Is(err, convert.ErrHighIDs):
		return suffixHint(err, "pass --privileged for a privileged-only template, or --squash-high-ids to give them to 65534 (nobody)")
	}
	return err
}

// pctFlag is the flag of each pct.Options (and convert.Options) field a
// pct.Error names; Raw, PVE's own output, is what --verbose shows.
var pctFlag = map[string]string{
	"VMID":                "--vmid",
	"Node":                "--node",
	"Hostname":            "--hostname",
	"Storage":             "--storage",
	"RootfsSize":          "--rootfs-size",
	"TemplateStorage":     "--template-storage",
	"ReplaceTemplate":     "--replace-template",
	"Memory":              "--memory",
	"Cores":               "--cores",
	"Password":            "--password",
	"SSHKeysFile":         "--ssh-public-keys",
	"Mounts":              "--mount",
	"Unprivileged":        "--unprivileged",
	"KeepFailed":          "--keep-failed",
	"RunAsRoot":           "--run-as-root",
	"DropEnv":             "--drop-env",
	"AllowTemplateMounts": "--allow-template-mounts",
	"SquashHighIDs":       "--squash-high-ids",
	"Privileged":          "--privileged",
	"Platform":            "--platform",
	"Raw":                 "--verbose",
	// upgrade's
	"Adopt":                "--adopt",
	"Image":                "--image",
	"DiscardRootfsChanges": "--discard-rootfs-changes",
}

// pctHint shows the Options fields a pct.Error names as deploy's flags,
// PVE's own output with --verbose, and names --keep-failed for a
// container kept after a failure.
func pctHint(e *env, err error) error {
	msg := err.Error()
	var pe *pct.Error
	if errors.As(err, &pe) {
		if r := renderFields(e, pe); r != pe.Error() {
			msg = strings.Replace(msg, pe.Error(), r, 1)
		}
		if e != nil && e.verbose && pe.Raw != "" && !strings.Contains(msg, pe.Raw) {
			msg += "\n" + pe.Raw
		}
	}
	var ke *pct.KeptError
	if errors.As(err, &ke) {
		msg = strings.Replace(msg, "was kept as it is, as asked;", "was kept as it is, because of --keep-failed;", 1)
	}
	return withHint(err, msg)
}

// renderFields is pe's message with the Options fields it names as
// flags, and the PVE parameters PVE refused as the flags of the same name
// the command has ("PVE refused --hostname: ...").
func renderFields(e *env, pe *pct.Error) string {
	out := *pe
	if pe.Kind == pct.ErrInvalidArgument && strings.HasPrefix(pe.Msg, "PVE refused ") {
		for _, p := range strings.Split(pe.Param, ",") {
			if e.hasFlag(strings.TrimRight(p, "0123456789")) {
				re := regexp.MustCompile(`(^PVE refused |; )` + regexp.QuoteMeta(p) + `: `)
				out.Msg = re.ReplaceAllString(out.Msg, "${1}--"+p+": ")
			}
		}
	}
	out.Msg = flagNames(out.Msg, pe.Fields)
	out.Fix = flagNames(out.Fix, pe.Fields)
	return out.Error()
}

// flagNames is s with the Options fields it names (of fields) as their
// flags.
func flagNames(s string, fields []string) string {
	for _, f := range fields {
		flag := pctFlag[f]
		if flag == "" {
			continue
		}
		re := regexp.MustCompile(`\b` + regexp.QuoteMeta(f) + `\b`)
		s = re.ReplaceAllLiteralString(s, flag)
	}
	return s
}

// cliResult names, in a check result's Fix, the commands that fix it:
// check --repair for what a repair does, and deploy or build for the
// Remedy the library describes in words.
func cliResult(r health.Result) health.Result {
	if r.Status == health.OK || r.Repaired {
		return r
	}
	r.Fix = r.Advice("`nexcage check --repair " + r.Target + "`")
	if r.Fields != "" {
		r.Fix = flagNames(r.Fix, strings.Split(r.Fields, ","))
	}
	switch r.Remedy {
	case health.Redeploy:
		r.Fix += " (`nexcage deploy --replace-template LOCAL_FILE`)"
	case health.Rebuild:
		r.Fix += " (`nexcage build --force`, or `nexcage convert`)"
	case health.NewBundle:
		r.Fix += ": make one with `nexcage unpack IMAGE DIR` or `nexcage generate`"
	}
	return r
}

// pveRoot is the PVE host's root directory: NEXCAGE_PVE_ROOT points it
// at a stand-in host's state directory in tests.
func pveRoot() string { return os.Getenv("NEXCAGE_PVE_ROOT") }
