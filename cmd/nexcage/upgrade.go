package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

// upgradeFlags are upgrade's own flags.
type upgradeFlags struct {
	image, healthCmd                             string
	dryRun, adopt, discardFS, dropEnv, runAsRoot bool
}

func init() {
	register(&command{
		name:    "upgrade",
		args:    "CT",
		summary: "move a container to a new version of its image, keeping its VMID, data, network and the user's changes",
		help: `CT is a VMID or the name create gave it. The image is the one the
container was made from, pulled again (--image for another tag or image,
or a template); it is built into the template cache, and when the
container already runs that template nothing is done. Otherwise the
container's rootfs is replaced by the new template's (see
docs/proxmox.md, "Replacing a container's rootfs"): its VMID, config,
network, mount points and their data stay; environment, entrypoint, cwd,
user and stop signal that the user changed from the old image's defaults
stay, the others take the new image's (--dry-run shows this merge). The
old rootfs is kept until the container has started (and --health-cmd has
succeeded in it); any failure puts the container back as it was.
With --remote (or $NEXCAGE_PVE_URL) the same upgrade is made of PVE API
requests; it refuses --health-cmd (the API cannot run a command in a
container) and a merge that changes raw lxc.* keys (cwd, user, stop
signal), which only root@pam writes on the host.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			fs.StringVar(&o.upgrade.image, "image", "", "the image or template to upgrade to (default: the container's own image reference, pulled again)")
			fs.BoolVar(&o.upgrade.dryRun, "dry-run", false, "print the plan (commands and the merge of the image settings) and change nothing on the host")
			fs.BoolVar(&o.upgrade.adopt, "adopt", false, "upgrade a container nexcage did not create (needs --image)")
			fs.BoolVar(&o.upgrade.discardFS, "discard-rootfs-changes", false, "upgrade a system container, losing the changes made in its rootfs")
			fs.BoolVar(&o.upgrade.dropEnv, "drop-env", false, "on PVE 9.0 (pve-container < 6.0.18), which could pass the image's environment only to the host's hooks too, upgrade without it (with a warning naming each variable) instead of refusing")
			fs.BoolVar(&o.upgrade.runAsRoot, "run-as-root", false, "before PVE 9.2 (no lxc.init.uid), run an entrypoint the image runs as a user as root instead of refusing")
			fs.StringVar(&o.upgrade.healthCmd, "health-cmd", "", "a shell command run in the upgraded container (pct exec, on the host only: the API cannot run one); its failure rolls the upgrade back")
			registerRemoteFlags(fs, &o.deploy.remote)
			imageFlags(fs, o)
			enumVar(fs, &o.pull, "pull", string(rootfs.PullAlways), pullValues, nil, "when to pull: always (default: an upgrade looks for a new version), missing, never")
			fs.BoolVarP(&o.verbose, "verbose", "v", false, "show PVE's own output with errors")
		},
		run: runUpgrade,
	})
}

func runUpgrade(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 1 {
		return nil, usagef("upgrade takes one CT (a VMID or a name), got %d arguments", len(args))
	}
	if e.upgrade.adopt && e.upgrade.image == "" {
		return nil, usagef("--adopt needs --image: nexcage does not know what the container runs")
	}
	h, err := pveHost(e)
	if err != nil {
		return nil, err
	}
	if e.upgrade.healthCmd != "" && h.Remote() {
		return nil, usagef("--health-cmd with --remote: the health command cannot run through PVE's API: it has no call that runs a command in a container; upgrade on the host (without --remote) to run --health-cmd, or leave --health-cmd out")
	}
	o := pipeline.UpgradeOptions{Image: e.upgrade.image, TemplateDir: os.Getenv("NEXCAGE_TEMPLATES"), Host: h, DryRun: e.upgrade.dryRun, Progress: e.progress}
	o.Upgrade.Adopt, o.Upgrade.DiscardRootfsChanges, o.Upgrade.HealthCmd, o.Upgrade.DropEnv = e.upgrade.adopt, e.upgrade.discardFS, e.upgrade.healthCmd, e.upgrade.dropEnv
	o.Upgrade.RunAsRoot = e.upgrade.runAsRoot
	var store *rootfs.Store
	if e.upgrade.image == "" || !pipeline.IsTemplate(e.upgrade.image) {
		// Without --image the container's own reference is built: only
		// the source flags are read here.
		so, err := sourceOptions(e)
		if e.upgrade.image != "" {
			_, so, err = imageArgs(e, e.upgrade.image)
		}
		if err != nil {
			return nil, err
		}
		if o.Build, store, err = imageBuild(e, so); err != nil {
			return nil, err
		}
	}
	res, err := pipeline.Upgrade(ctx, store, args[0], o)
	if err != nil {
		return nil, deployError(e, err)
	}
	return printUpgrade(e, res), nil
}

// printUpgrade prints the plan (--dry-run), "already up to date", or what
// was done, and returns the --json result.
func printUpgrade(e *env, r *pipeline.UpgradeResult) any {
	p := r.Plan
	out := map[string]any{"vmid": p.VMID, "up_to_date": p.UpToDate, "from": p.From, "to": p.To, "merge": p.Merge, "commands": p.Commands(), "dry_run": r.Result == nil && !p.UpToDate}
	if r.Result != nil {
		out["started"] = r.Result.Started
		out["commands"] = r.Result.Commands
	}
	if e.json {
		return out
	}
	switch {
	case p.UpToDate:
		fmt.Fprintf(e.stdout, "CT %d is already up to date (%s)\n", p.VMID, p.VolID)
	case r.Result == nil:
		fmt.Fprintf(e.stdout, "# plan to upgrade CT %d from %s to %s; nothing was changed\n", p.VMID, p.From.Template, p.To.Template)
		for _, m := range p.Merge {
			why := "the new image's default"
			if m.Kept {
				why = "kept: changed by the user"
			}
			fmt.Fprintf(e.stdout, "# %s: old default %q, new default %q, current %q -> %q (%s)\n", m.Key, m.OldDefault, m.NewDefault, m.Current, m.Result, why)
		}
		for _, c := range p.Commands() {
			fmt.Fprintln(e.stdout, c)
		}
	default:
		fmt.Fprintf(e.stdout, "CT %d upgraded to %s\n", p.VMID, p.VolID)
	}
	return out
}
