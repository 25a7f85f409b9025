package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

func init() {
	register(&command{
		name:    "pull",
		args:    "IMAGE",
		summary: "store one platform of an image in the local OCI layout store",
		help: `IMAGE is docker://REF or a bare REF (registry), oci:DIR[:TAG],
oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG]. Blobs already in
the store are not fetched again. Prints the stored manifest digest.`,
		flags: imageFlags,
		run:   runPull,
	})
	register(&command{
		name:    "unpack",
		args:    "IMAGE BUNDLE",
		summary: "unpack an image into an OCI runtime bundle (BUNDLE/rootfs + config.json)",
		help: `Pulls IMAGE into the store when it is not there yet (see --pull), then
unpacks it with umoci into BUNDLE. As root every owner, mode, device node
and xattr is kept; as an ordinary user the unpack is rootless: your ids
stand for root and other owners are kept in the user.rootlesscontainers
xattr. A non-empty BUNDLE is refused unless --force.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			imageFlags(fs, o)
			pullFlag(fs, o)
			fs.BoolVar(&o.force, "force", false, "replace a non-empty BUNDLE")
			maxLayerSizeFlag(fs, o)
			limitFlags(fs, o)
		},
		run: runUnpack,
	})
	register(&command{
		name:    "list",
		summary: "list the images in the store, or (-c) the containers nexcage created",
		help: `Without flags: the store's images. With --containers: the containers on
this Proxmox host or cluster that nexcage created (recorded in their
description), with their node, status, template and image digest.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			storeFlag(fs, o)
			fs.BoolVarP(&o.containers, "containers", "c", false, "list the containers nexcage created instead")
			registerRemoteFlags(fs, &o.deploy.remote)
		},
		run: runList,
	})
}

func storeFlag(fs *pflag.FlagSet, o *opts) {
	fs.StringVar(&o.store, "store", "", "image store directory (default $NEXCAGE_STORE, else $XDG_CACHE_HOME/nexcage/store, else ~/.cache/nexcage/store)")
}

func imageFlags(fs *pflag.FlagSet, o *opts) {
	storeFlag(fs, o)
	checkedVar(fs, &o.platform, "platform", "", checkPlatform, "os/arch[/variant] to pull from a multi-platform image (default: this machine's, "+rootfs.HostPlatform().String()+")")
	fs.BoolVar(&o.insecure, "insecure", false, "allow plain HTTP and unverified TLS for registries not on loopback")
	checkedVar(fs, &o.timeout, "timeout", "2m", checkDuration, "give up on a registry that sends no answer for this long")
}

// pullValues are what --pull accepts: rootfs's policies.
var pullValues = func() []string {
	var v []string
	for _, p := range rootfs.PullPolicies {
		v = append(v, string(p))
	}
	return v
}()

func pullFlag(fs *pflag.FlagSet, o *opts) {
	enumVar(fs, &o.pull, "pull", string(rootfs.PullMissing), pullValues, nil, "when to pull: missing (not in the store yet, or a local layout or archive that changed), always, never")
}

func maxLayerSizeFlag(fs *pflag.FlagSet, o *opts) {
	checkedVar(fs, &o.maxLayerSize, "max-layer-size", "64G", checkSize, "refuse a layer that unpacks to more file content than this (a decompression bomb)")
}

func openStore(e *env) (*rootfs.Store, error) {
	dir := e.store
	if dir == "" {
		var err error
		if dir, err = rootfs.DefaultStoreDir(); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		if e.store == "" {
			return nil, fmt.Errorf("the store %s (NEXCAGE_STORE, or the default) is a file, not a directory: choose another with --store", dir)
		}
		return nil, usagef("--store: %q is a file, not a store directory", dir)
	}
	// Not created here: list must not make one, and pull makes it only
	// once its source answered.
	return rootfs.StoreAt(dir)
}

func sourceOptions(e *env) (rootfs.SourceOptions, error) {
	so := rootfs.SourceOptions{Platform: rootfs.HostPlatform(), Insecure: e.insecure}
	if e.platform != "" {
		p, err := rootfs.ParsePlatform(e.platform)
		if err != nil {
			return so, usagef("--platform: %v", err)
		}
		so.Platform = p
	}
	if e.timeout != "" {
		d, err := time.ParseDuration(e.timeout)
		if err != nil || d <= 0 {
			return so, usagef("--timeout: %v", checkDuration(e.timeout))
		}
		so.Timeout = d
	}
	return so, nil
}

func parseImageArg(s string) (rootfs.Ref, error) {
	ref, err := rootfs.ParseRef(s)
	if err != nil {
		return ref, usagef("%v", err)
	}
	return ref, nil
}

func runPull(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 1 {
		return nil, usagef("pull takes exactly one IMAGE, got %d arguments", len(args))
	}
	ref, so, err := imageArgs(e, args[0])
	if err != nil {
		return nil, err
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}
	img, err := store.Pull(ctx, ref, rootfs.PullOptions{SourceOptions: so, Progress: e.progress})
	if err != nil {
		return nil, err
	}
	if !e.json {
		fmt.Fprintln(e.stdout, img.Digest)
	}
	return img, nil
}

// imageArgs parses what every command taking an IMAGE needs, before
// anything touches the disk.
func imageArgs(e *env, image string) (rootfs.Ref, rootfs.SourceOptions, error) {
	ref, err := parseImageArg(image)
	if err != nil {
		return ref, rootfs.SourceOptions{}, err
	}
	so, err := sourceOptions(e)
	return ref, so, err
}

// notStoredHint words the store's refusal under --pull never the way the
// command line fixes it.
func notStoredHint(err error) error {
	var ns *rootfs.NotStoredError
	if !errors.As(err, &ns) {
		return err
	}
	return &hinted{err: err, msg: fmt.Sprintf("%v: %s (%s) is not in the store %s and --pull never forbids fetching it: run `nexcage pull` first", rootfs.ErrNotFound, ns.Ref, ns.Platform, ns.Store)}
}

func runUnpack(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 2 {
		return nil, usagef("unpack takes IMAGE and BUNDLE, got %d arguments", len(args))
	}
	_, so, err := imageArgs(e, args[0])
	if err != nil {
		return nil, err
	}
	limit, err := parseSize(e.maxLayerSize)
	if err != nil {
		return nil, err
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}
	img, res, err := pipeline.Unpack(ctx, store, args[0], args[1], pipeline.UnpackOptions{
		Source: so, Pull: rootfs.PullPolicy(e.pull),
		Unpack: rootfs.UnpackOptions{MaxLayerSize: limit, MaxEntries: e.maxEntries, Force: e.force, Rootless: os.Geteuid() != 0, Progress: e.progress},
	})
	if err != nil {
		return nil, notStoredHint(err)
	}
	if !e.json {
		mode := "as root"
		if res.Rootless {
			mode = "rootless"
		}
		fmt.Fprintf(e.stdout, "unpacked %s (%s) into %s: %d layers, %d entries, %s\n", img.Ref, img.Platform, res.Bundle, res.Layers, res.Entries, mode)
	}
	return res, nil
}

func runList(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 0 {
		return nil, usagef("list takes no arguments")
	}
	if e.containers {
		return listContainers(ctx, e)
	}
	if r := e.deploy.remote; r.url != "" || r.tokenFile != "" || r.user != "" || r.passwordFile != "" || r.fingerprint != "" {
		return nil, usagef("--remote and its flags list containers: they need --containers (the store's images are on this machine)")
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}
	imgs, err := store.List()
	if err != nil {
		return nil, err
	}
	if imgs == nil {
		imgs = []rootfs.Image{}
	}
	if e.json {
		return map[string]any{"store": store.Dir, "exists": store.Exists(), "images": imgs}, nil
	}
	if len(imgs) == 0 {
		if !store.Exists() {
			fmt.Fprintf(e.stdout, "no images in %s (there is no store yet: the first pull creates it)\n", store.Dir)
			return nil, nil
		}
		fmt.Fprintf(e.stdout, "no images in %s\n", store.Dir)
		return nil, nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REFERENCE\tPLATFORM\tDIGEST\tSIZE\tPULLED")
	for _, im := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Ref, im.Platform, shortDigest(im.Digest), progress.HumanBytes(im.Size), im.Pulled.Local().Format("2006-01-02 15:04"))
	}
	return nil, tw.Flush()
}

func shortDigest(d string) string {
	if len(d) > 7+12 {
		return d[:7+12]
	}
	return d
}

func listContainers(ctx context.Context, e *env) (any, error) {
	h, err := pveHost(e)
	if err != nil {
		return nil, err
	}
	cts, err := h.ListManaged(ctx)
	if err != nil {
		return nil, err
	}
	if cts == nil {
		cts = []pct.Managed{}
	}
	if e.json {
		return map[string]any{"containers": cts}, nil
	}
	if len(cts) == 0 {
		fmt.Fprintln(e.stdout, "no containers created by nexcage")
		return nil, nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVMID\tNODE\tSTATUS\tTEMPLATE\tIMAGE DIGEST")
	for _, c := range cts {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", c.Name, c.VMID, c.Node, c.Status, c.Template, shortDigest(c.Digest))
	}
	return nil, tw.Flush()
}
