package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/template"
)

// processFlags override the image's process on build and convert, the
// way docker's and podman's run flags do.
type processFlags struct {
	entrypoint, cmd setString
	env             []string
	user, workdir   string
}

// setString is a string flag that knows whether it was given, so that
// --entrypoint "" (no entrypoint) differs from no --entrypoint.
type setString struct {
	v   string
	set bool
}

func (s *setString) String() string     { return s.v }
func (s *setString) Set(v string) error { s.v, s.set = v, true; return nil }
func (s *setString) Type() string       { return "string" }

func registerProcessFlags(fs *pflag.FlagSet, pf *processFlags) {
	fs.Var(&pf.entrypoint, "entrypoint", `replace the image's Entrypoint, and drop its Cmd unless --cmd is given (as docker run): a program, or a JSON array '["/bin/app","--flag"]'`)
	fs.Var(&pf.cmd, "cmd", `replace the image's Cmd (kept after the entrypoint): a JSON array, or a command line split at blanks with '...' or "..." grouping (no escapes)`)
	fs.StringArrayVar(&pf.env, "env", nil, "NAME=VALUE to set in the process environment, replacing the image's NAME (repeatable); NAME alone takes nexcage's own value of NAME")
	fs.StringVar(&pf.user, "user", "", "USER[:GROUP] the process runs as: names from the image's /etc/passwd and /etc/group, or numbers")
	fs.StringVar(&pf.workdir, "workdir", "", "the process's working directory (absolute)")
}

// overrides turns the flags into convert's ProcessOverrides, checking
// each value on its own so an error names its flag.
func (pf *processFlags) overrides() (*template.ProcessOverrides, error) {
	o := &template.ProcessOverrides{User: pf.user, Workdir: pf.workdir}
	if pf.entrypoint.set {
		args := []string{}
		if v := strings.TrimSpace(pf.entrypoint.v); strings.HasPrefix(v, "[") {
			if err := json.Unmarshal([]byte(v), &args); err != nil {
				return nil, usagef("--entrypoint %s: not a JSON array of strings (%v)", pf.entrypoint.v, err)
			}
		} else if pf.entrypoint.v != "" {
			args = []string{pf.entrypoint.v}
		}
		o.Entrypoint = &args
	}
	if pf.cmd.set {
		args := []string{}
		if v := strings.TrimSpace(pf.cmd.v); strings.HasPrefix(v, "[") {
			if err := json.Unmarshal([]byte(v), &args); err != nil {
				return nil, usagef("--cmd %s: not a JSON array of strings (%v)", pf.cmd.v, err)
			}
		} else if w, err := lxc.SplitWordsStrict(pf.cmd.v); err != nil {
			return nil, usagef("--cmd: %q: %v; close it, or give a JSON array", pf.cmd.v, err)
		} else if w != nil {
			args = w
		}
		o.Cmd = &args
	}
	var all []string
	if o.Entrypoint != nil {
		all = append(all, *o.Entrypoint...)
	}
	if o.Cmd != nil {
		all = append(all, *o.Cmd...)
	}
	for i, a := range all {
		if _, err := lxc.JoinCommand([]string{a}); err != nil && !shellScript(all, i) {
			flag := "--cmd"
			if o.Entrypoint != nil && i < len(*o.Entrypoint) {
				flag = "--entrypoint"
			}
			return nil, usagef("%s: %q %s", flag, a, strings.TrimPrefix(err.Error(), "argument 0 "))
		}
	}
	for _, e := range pf.env {
		name, _, hasValue := strings.Cut(e, "=")
		if !hasValue {
			v, ok := os.LookupEnv(name)
			if !ok {
				return nil, usagef("--env %s: %s is not set in nexcage's environment; write --env %s=VALUE", e, name, name)
			}
			e = name + "=" + v
		}
		if err := lxc.CheckEnv(0, e); err != nil {
			var ee *lxc.EnvError
			if errors.As(err, &ee) {
				return nil, usagef("--env %s: %s", e, ee.Msg)
			}
			return nil, usagef("--env %s: %v", e, err)
		}
		o.Env = append(o.Env, e)
	}
	if o.Workdir != "" && !strings.HasPrefix(o.Workdir, "/") {
		return nil, usagef("--workdir %s: write an absolute path", o.Workdir)
	}
	if o.IsZero() {
		return nil, nil
	}
	return o, nil
}

// shellScript reports whether args[i] is the script of a shell's -c,
// which convert can carry even when it holds both kinds of quotes.
func shellScript(args []string, i int) bool {
	if i != 2 {
		return false
	}
	_, _, err := lxc.InitCommand(args[:3])
	return err == nil
}

// processHint adds the flags that fix an image's unmappable process to
// convert's error.
func processHint(err error) error {
	var ce *lxc.CommandError
	var ee *lxc.EnvError
	switch {
	case errors.As(err, &ce):
		return appendHint(err, "; give the process another way with --entrypoint and --cmd")
	case errors.As(err, &ee) && ee.Name != "" && !lxc.ValidEnvName(ee.Name):
		return appendHint(err, fmt.Sprintf("; rebuild the image without it, or give its value a name of letters, digits and '_' with --env (e.g. --env %s=VALUE)", strings.Map(func(r rune) rune {
			if r == '.' || r == '-' {
				return '_'
			}
			return r
		}, ee.Name)))
	case errors.As(err, &ee) && ee.Name != "":
		return appendHint(err, fmt.Sprintf("; set it with --env %s=VALUE", ee.Name))
	}
	return err
}

// appendHint appends s to err's message once: convert hints its own
// error, and run's hint sees it again.
func appendHint(err error, s string) error {
	if strings.Contains(err.Error(), s) {
		return err
	}
	return fmt.Errorf("%w%s", err, s)
}
