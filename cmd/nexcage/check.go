package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/pipeline"
)

func init() {
	register(&command{
		name:    "check",
		args:    "[TARGET...]",
		summary: "check the host, templates, bundles, the store or a Proxmox storage (--repair fixes what it can)",
		help: `Without TARGET: the host (PVE tools and version, root, free space and
inodes, writable directories, subordinate ids, user namespaces, scratch
directories of killed runs). A TARGET is a template (.tar.zst, .tar.gz,
.tar.xz), a bundle directory (with config.json), the store (its directory,
or the word "store"), a directory of templates and bundles, a Proxmox
storage id (e.g. local), or the word "host".

One line per check: "ok", "warn" or "fail", the target and what was
checked, and for warn and fail the cause and the fix. --repair deletes
corrupt blobs, leftovers of interrupted writes and partial uploads, and
drops store index entries whose blobs are gone (pulled again on next use).

Exit status: 0 all ok (also after repairs), 1 any failure, 3 warnings only.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			storeFlag(fs, o)
			fs.BoolVar(&o.repair, "repair", false, "delete corrupt blobs and leftovers of interrupted writes, drop broken store entries")
			registerRemoteFlags(fs, &o.deploy.remote)
		},
		run: runCheck,
	})
}

// Exit status of check when something warned but nothing failed.
const exitWarnings = 3

// checkLine renders a result: "STATUS  TARGET: CHECK[: CAUSE; FIX]".
func checkLine(r health.Result) string {
	s := fmt.Sprintf("%-4s  %s: %s", r.Status, r.Target, r.Check)
	if r.Cause == "" && r.Fix == "" {
		return s
	}
	s += ": " + r.Cause
	switch {
	case r.Repaired:
		s += "; repaired: " + r.Fix
	case r.Fix != "":
		s += "; " + r.Fix
	}
	return s
}

// checkReport is check's result object (--json).
type checkReport struct {
	OK         bool            `json:"ok"`
	Status     string          `json:"status"` // the worst status
	ExitStatus int             `json:"exit_status"`
	Repaired   int             `json:"repaired"`
	Checks     []health.Result `json:"checks"`
}

// checkOutcome is returned when not every check is ok: the report is
// already printed (or, with --json, is the failedWith result), and
// ExitStatus is 1 (failures) or 3 (warnings only). main maps it to the
// exit status without printing anything more.
type checkOutcome struct {
	status int
	*failedWith
}

func (c *checkOutcome) ExitStatus() int { return c.status }
func (c *checkOutcome) Unwrap() error   { return c.failedWith }

func runCheck(ctx context.Context, e *env, args []string) (any, error) {
	host, err := pveHost(e)
	if err != nil {
		return nil, err
	}
	copts := pipeline.CheckOptions{
		Repair: e.repair,
		// One scan of the open files for every target.
		InUse:       pipeline.NewInUse(),
		StoreDir:    e.store,
		TemplateDir: os.Getenv("NEXCAGE_TEMPLATES"),
		// What a directory short of space names as the way to choose another.
		StoreSetting:    "--store or NEXCAGE_STORE",
		TemplateSetting: "NEXCAGE_TEMPLATES or -o",
		Host:            host,
	}
	var results []health.Result
	if len(args) == 0 {
		args = []string{"host"}
	}
	for _, arg := range args {
		e.progress.Step("checking %s", arg)
		rs, err := pipeline.Check(ctx, arg, copts)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			r = cliResult(r)
			results = append(results, r)
			if !e.json {
				fmt.Fprintln(e.stdout, checkLine(r))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := checkReport{OK: true, Status: health.OK, Checks: results}
	fails, warns := 0, 0
	for _, r := range results {
		switch r.Status {
		case health.Fail:
			fails++
		case health.Warn:
			warns++
		}
		if r.Repaired {
			rep.Repaired++
		}
	}
	switch {
	case fails > 0:
		rep.OK, rep.Status, rep.ExitStatus = false, health.Fail, exitFailure
		return nil, &checkOutcome{exitFailure, &failedWith{result: rep, err: fmt.Errorf("%d check(s) failed, %d warned", fails, warns)}}
	case warns > 0:
		rep.OK, rep.Status, rep.ExitStatus = false, health.Warn, exitWarnings
		return nil, &checkOutcome{exitWarnings, &failedWith{result: rep, err: fmt.Errorf("%d check(s) warned", warns)}}
	}
	if e.json {
		return rep, nil
	}
	return nil, nil
}
