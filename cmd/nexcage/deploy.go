package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pipeline"
)

// unprivilegedValues are what --unprivileged accepts (true and false too).
var unprivilegedValues = []string{"1", "0"}

// deployFlags are deploy's flags; build --deploy and create share them.
type deployFlags struct {
	vmid, memory, swap, cores, rootfsSize, volumeSize int
	node, hostname, storage, templateStorage          string
	net0, features, password, sshKeys                 string
	unprivileged                                      string
	mounts                                            []string
	start, dryRun, keepFailed, replaceTemplate        bool
	allowRawLXC                                       bool
	passwordFile                                      string
	swapSet, runAsRoot                                bool
	dropEnv, allowTemplateMounts                      bool
	pveVersion                                        string
	remote                                            remoteFlags
}

// setInt is an int flag that records whether it was given: --swap 0 is
// a value (no swap), not "PVE's default".
type setInt struct {
	intValue
	set *bool
}

func (v *setInt) Set(s string) error {
	if err := v.intValue.Set(s); err != nil {
		return err
	}
	*v.set = true
	return nil
}

func registerDeployFlags(fs *pflag.FlagSet, d *deployFlags) {
	intVar(fs, &d.vmid, "vmid", "", 0, 100, 999999999, false, "a VMID is a whole number from 100 to 999999999", "container id (default: the next free one, pvesh get /cluster/nextid)")
	checkedVar(fs, &d.hostname, "hostname", "", checkHostname, "container hostname (default: the template's, else CT<vmid>)")
	fs.StringVar(&d.storage, "storage", "local-lvm", "storage for the rootfs and image volumes")
	intVar(fs, &d.rootfsSize, "rootfs-size", "", 8, 1, 1<<20, false, "--rootfs-size is a whole number of GiB, at least 1", "rootfs size in GiB")
	fs.StringVar(&d.templateStorage, "template-storage", "local", "storage to upload a local template to")
	fs.BoolVar(&d.replaceTemplate, "replace-template", false, "overwrite a different template of the same name in the template storage")
	intVar(fs, &d.memory, "memory", "", 0, 16, 1<<30, true, "--memory is a whole number of MiB, at least 16 (PVE's minimum)", "memory in MiB (default: PVE's, 512)")
	fs.Var(&setInt{intValue{p: &d.swap, min: 0, max: 1 << 30, zeroOK: true, what: "--swap is a whole number of MiB, 0 or more"}, &d.swapSet}, "swap", "swap in MiB, 0 for none (default: PVE's, 512)")
	fs.BoolVar(&d.dropEnv, "drop-env", false, "on PVE 9.0 (pve-container < 6.0.18), which could pass the image's environment only to the host's hooks too, create the container without it (with a warning naming each variable) instead of refusing")
	fs.BoolVar(&d.allowTemplateMounts, "allow-template-mounts", false, "apply the bind mounts of host directories the template's .conf asks for (with a warning for each) instead of refusing; --mount SRC:DEST accepts one by repeating it")
	fs.BoolVar(&d.runAsRoot, "run-as-root", false, "on PVE before 9.2 (pve-container < 6.1), which cannot run an entrypoint as the image's user, run it as root instead of refusing")
	enumVar(fs, &d.pveVersion, "pve-version", "", pct.KnownVersions(), nil, "with --dry-run: plan for this PVE version ("+valueSet(pct.KnownVersions()).String()+") without a Proxmox host")
	intVar(fs, &d.cores, "cores", "", 0, 1, 8192, true, "--cores is a whole number from 1 to 8192", "CPU cores (default: all)")
	fs.StringVar(&d.net0, "net0", "name=eth0,bridge=vmbr0,ip=dhcp", "first network interface, in pct's syntax")
	enumVar(fs, &d.unprivileged, "unprivileged", "", unprivilegedValues, map[string]string{"true": "1", "false": "0"}, "1 or 0 (default: from the template: unprivileged unless it is privileged-only)")
	fs.StringVar(&d.features, "features", "", "container features, e.g. nesting=1,keyctl=1")
	fs.StringArrayVar(&d.mounts, "mount", nil, "bind mount SRC:DEST[:ro] (repeatable)")
	intVar(fs, &d.volumeSize, "volume-size", "", 8, 1, 1<<20, false, "--volume-size is a whole number of GiB, at least 1", "GiB of storage for each image VOLUME")
	checkedVar(fs, &d.password, "password", "", checkPassword, "root password (at least 5 characters; every user sees it in the process list: prefer --password-file)")
	fs.StringVar(&d.passwordFile, "password-file", "", "file whose first line is the root password, - for standard input")
	fs.StringVar(&d.sshKeys, "ssh-public-keys", "", "file of SSH public keys for root")
	fs.BoolVar(&d.start, "start", false, "start the container after creating it")
	fs.StringVar(&d.node, "node", "", "create on this node of the cluster (through pvesh; with --remote, default: the node both storages are on, or the only node)")
	fs.BoolVar(&d.dryRun, "dry-run", false, "print the plan (commands and resulting config) and change nothing")
	fs.BoolVar(&d.keepFailed, "keep-failed", false, "keep a container whose set-up failed after it was created, instead of destroying it")
	fs.BoolVar(&d.allowRawLXC, "allow-raw-lxc", false, "deploy a template whose .conf has lines nexcage does not write, dropping those lines (with a warning)")
	registerRemoteFlags(fs, &d.remote)
}

func checkHostname(s string) error {
	if !lxc.ValidDNSName(s) {
		return badValuef("%q is not a valid DNS name, which PVE requires; use letters, digits and '-', in dot-separated labels of at most 63 characters", s)
	}
	return nil
}

// checkPassword never repeats the password: messages end up in logs.
func checkPassword(s string) error {
	if len(s) < 5 {
		return badValuef("the password is shorter than 5 characters, PVE's minimum")
	}
	return nil
}

func init() {
	register(&command{
		name:    "deploy",
		args:    "TEMPLATE",
		summary: "create a Proxmox container from a template, validated first, undone on failure",
		help: `TEMPLATE is a local template file (its .conf and .json sidecars are read
and uploaded with it) or a volume id STORAGE:vztmpl/FILE. Everything is
checked before anything changes on the host; a step that fails after the
container was created destroys it again (unless --keep-failed).`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			registerDeployFlags(fs, &o.deploy)
			fs.BoolVarP(&o.verbose, "verbose", "v", false, "show PVE's own output with errors")
		},
		run: runDeploy,
	})
}

func runDeploy(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 1 {
		return nil, usagef("deploy takes one TEMPLATE, got %d arguments", len(args))
	}
	return deployTemplate(ctx, e, args[0])
}

// checkDeployFlags checks the deploy flags and turns them into pct
// options, once: build --deploy calls it before building, so a mistake
// in them is a usage error before a long build, not after it.
func checkDeployFlags(e *env) (pct.Options, error) {
	if e.deployOpts != nil {
		return *e.deployOpts, nil
	}
	if e.deploy.pveVersion != "" && !e.deploy.dryRun {
		return pct.Options{}, usagef("--pve-version plans without a Proxmox host, so it needs --dry-run")
	}
	o, err := deployOptions(e.deploy)
	if err != nil {
		return o, err
	}
	e.deployOpts = &o
	return o, nil
}

// deployOnlyFlags are the flags build takes only with --deploy.
func deployOnlyFlags() []string {
	fs := pflag.NewFlagSet("deploy", pflag.ContinueOnError)
	registerDeployFlags(fs, &deployFlags{})
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	return names
}

// deployOptions turns the flags into pct options.
func deployOptions(d deployFlags) (pct.Options, error) {
	o := pct.Options{
		VMID: d.vmid, Node: d.node, Hostname: d.hostname, Storage: d.storage, RootfsSize: d.rootfsSize,
		TemplateStorage: d.templateStorage, ReplaceTemplate: d.replaceTemplate,
		Memory: d.memory, Cores: d.cores, RunAsRoot: d.runAsRoot, DropEnv: d.dropEnv, AllowTemplateMounts: d.allowTemplateMounts, Net0: d.net0, Features: d.features,
		VolumeSize: d.volumeSize, Password: d.password, SSHKeysFile: d.sshKeys, Start: d.start, KeepFailed: d.keepFailed,
	}
	if d.swapSet {
		swap := d.swap
		o.Swap = &swap
	}
	if d.passwordFile != "" {
		if d.password != "" {
			return o, usagef("--password and --password-file exclude each other")
		}
		pw, err := readPasswordFile(d.passwordFile)
		if err != nil {
			return o, err
		}
		o.Password = pw
	}
	if d.unprivileged != "" {
		v := d.unprivileged == "1"
		o.Unprivileged = &v
	}
	for _, m := range d.mounts {
		parts := strings.Split(m, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro") {
			return o, usagef("--mount: %q is not a bind mount; write SRC:DEST or SRC:DEST:ro", m)
		}
		o.Mounts = append(o.Mounts, pct.BindMount{Source: parts[0], Dest: parts[1], RO: len(parts) == 3})
	}
	return o, nil
}

// maxPasswordLine is the longest password --password-file takes.
const maxPasswordLine = 4096

// readPasswordFile reads the first line of a file, or of stdin for "-".
func readPasswordFile(name string) (string, error) {
	f := os.Stdin
	if name != "-" {
		var err error
		if f, err = os.Open(name); err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
	}
	line, err := bufio.NewReader(io.LimitReader(f, maxPasswordLine+1)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("--password-file %s: %w", name, err)
	}
	if len(strings.TrimRight(line, "\r\n")) > maxPasswordLine {
		// Cutting it would set a password the user never chose.
		return "", fmt.Errorf("--password-file %s: the first line is longer than %d bytes", name, maxPasswordLine)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("--password-file %s: the first line is empty", name)
	}
	return line, nil
}

// deployOpts are the pipeline's deploy options from the deploy flags.
func deployOpts(e *env) (pipeline.DeployOptions, error) {
	o, err := checkDeployFlags(e)
	if err != nil {
		return pipeline.DeployOptions{}, err
	}
	if e.conv.privileged && o.Unprivileged == nil {
		// build --privileged --deploy: the user asked for it just now.
		v := false
		o.Unprivileged = &v
	}
	d := pipeline.DeployOptions{Options: o, AllowRawLXC: e.deploy.allowRawLXC, DryRun: e.deploy.dryRun, Progress: e.progress}
	if e.deploy.pveVersion != "" {
		v, err := pct.ParseVersion(e.deploy.pveVersion)
		if err != nil {
			return d, err
		}
		d.Host = pct.OfflineHost(v, e.deploy.node)
		if e.deploy.remote.remoteURL() != "" && e.deploy.remote.url != "" {
			return d, usagef("--pve-version plans without a Proxmox host, --remote with one: give one of them")
		}
	} else if d.Host, err = pveHost(e); err != nil {
		return d, err
	}
	return d, nil
}

// deployTemplate deploys a template as the deploy flags say.
func deployTemplate(ctx context.Context, e *env, arg string) (any, error) {
	o, err := deployOpts(e)
	if err != nil {
		return nil, err
	}
	res, err := pipeline.Deploy(ctx, arg, o)
	if err != nil {
		return nil, deployError(e, err)
	}
	return printDeploy(e, res), nil
}

// printDeploy prints a deploy's plan (--dry-run) or what it did, and
// returns the --json result.
func printDeploy(e *env, r *pipeline.DeployResult) any {
	plan := r.Plan
	if r.Result == nil {
		if !e.json {
			fmt.Fprintf(e.stdout, "# plan for CT %d (PVE %s, pve-container %s); nothing was changed\n", plan.VMID, plan.Version, plan.Container)
			for _, c := range plan.Commands() {
				fmt.Fprintln(e.stdout, c)
			}
			fmt.Fprintf(e.stdout, "# resulting config:\n%s", plan.Config.Render())
		}
		return map[string]any{"dry_run": true, "vmid": plan.VMID, "pve": plan.Version.String(), "pve_container": plan.Container.String(), "commands": plan.Commands(), "config": plan.Config.Render()}
	}
	res := r.Result
	if !e.json {
		state := "created"
		if res.Started {
			state = "created and started"
		}
		fmt.Fprintf(e.stdout, "CT %d %s from %s\n", res.VMID, state, res.VolID)
	}
	return res
}

// deployError adds to a deploy's failure what the command line does
// about it: the flag that allows a template's raw lines, how to make a
// missing template, (the rest is hint's).
func deployError(e *env, err error) error {
	var tce *pct.TemplateConfigError
	var pe *pct.Error
	switch {
	case errors.As(err, &tce) && tce.Unsafe != nil:
		return &hinted{err: err, msg: err.Error() + ", or pass --allow-raw-lxc to deploy without them"}
	case errors.As(err, &pe) && pe.Param == "template" && errors.Is(err, pct.ErrNotFound):
		c := *pe
		c.Fix = "build it first (nexcage build IMAGE -o DIR/) or give STORAGE:vztmpl/FILE"
		return &c
	}
	// The rest (flags for PVE's parameters, PVE's own output with
	// --verbose) is hint's, in run's error branch.
	return err
}
