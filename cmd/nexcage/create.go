package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

func init() {
	register(&command{
		name:    "create",
		args:    "--name NAME --image IMAGE",
		summary: "create a named container from a template or an image (built first when needed)",
		help: `--image is a template (a local file or STORAGE:vztmpl/FILE) or any image
reference build accepts; an image is built first into the template cache
($NEXCAGE_TEMPLATES, else next to the store; cache hits are free), then
deployed. --name is the container's hostname and its identity: a
container of that name anywhere in the cluster is "already exists". All of
deploy's flags work here.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			fs.StringVar(&o.createName, "name", "", "container name (its hostname); required")
			fs.StringVar(&o.createImage, "image", "", "template or image reference; required")
			imageFlags(fs, o)
			pullFlag(fs, o)
			registerDeployFlags(fs, &o.deploy)
			fs.BoolVarP(&o.verbose, "verbose", "v", false, "show PVE's own output with errors")
		},
		run: runCreate,
	})
}

func runCreate(ctx context.Context, e *env, args []string) (any, error) {
	switch {
	case len(args) != 0:
		return nil, usagef("create takes no arguments: give --name NAME --image IMAGE")
	case e.createName == "" && e.createImage == "":
		return nil, usagef("--name and --image are required")
	case e.createName == "":
		return nil, usagef("--name is required: the container's name (its hostname)")
	case e.createImage == "":
		return nil, usagef("--image is required: a template file, STORAGE:vztmpl/FILE or an image reference")
	case !lxc.ValidDNSName(e.createName):
		return nil, usagef("--name: %s", checkHostname(e.createName))
	case e.deploy.hostname != "" && e.deploy.hostname != e.createName:
		return nil, usagef("--hostname and --name differ: with create, --name is the hostname")
	}
	e.deploy.hostname = e.createName

	// The name is the identity: refuse before anything is built or changed.
	h := pct.NewHost(pveRoot())
	if r, err := h.FindByName(ctx, e.createName); err != nil {
		return nil, pctError(e, err)
	} else if r != nil {
		return nil, &pct.Error{Kind: pct.ErrAlreadyExists, Param: "name", Msg: fmt.Sprintf("a container named %s already exists (CT %d on node '%s')", e.createName, r.VMID, r.Node), Fix: "choose another --name, or remove it with `pct destroy " + fmt.Sprint(r.VMID) + " --purge`"}
	}

	template := e.createImage
	if !isTemplateArg(template) {
		built, err := buildForCreate(ctx, e, template)
		if err != nil {
			return nil, err
		}
		template = built
	}
	return deployTemplate(ctx, e, template)
}

// isTemplateArg tells templates (a volume id, or a local template file)
// from image references.
func isTemplateArg(s string) bool {
	if strings.Contains(s, ":vztmpl/") {
		return true
	}
	if _, ok := convert.CompressionFromName(s); ok {
		return true
	}
	return false
}

// buildForCreate builds an image into the template cache (a no-op when
// the template there is up to date) and returns the template's path.
func buildForCreate(ctx context.Context, e *env, image string) (string, error) {
	ref, so, err := imageArgs(e, image)
	if err != nil {
		return "", err
	}
	store, err := openStore(e)
	if err != nil {
		return "", err
	}
	dir := os.Getenv("NEXCAGE_TEMPLATES")
	if dir == "" {
		dir = filepath.Join(filepath.Dir(store.Dir), "templates")
	}
	opts := convert.Options{Output: dir + "/", ToolVersion: nexcageVersion(), Progress: e.progress}
	res, _, err := buildOne(ctx, e, store, ref, so, opts, map[string]float64{})
	if err != nil {
		return "", err
	}
	return res.Template, nil
}
