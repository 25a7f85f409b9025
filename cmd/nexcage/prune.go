package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

func init() {
	register(&command{
		name:    "prune",
		summary: "remove from the store the blobs, images and cached chains no stored image needs",
		help: `Removes the blobs no image in the store references (through its
manifest or index, config and layers: what a moved tag or a replaced
image leaves behind) and the cached layer chains no stored image starts
with. With --older-than, also the images not used for that long (every
pull, build, unpack and export of an image records a use) and the
cached chains not used for that long; their blobs go with them unless
another image shares them.

Runs only while no pull or build is using the store: otherwise it
removes nothing and exits 1 (run it again later). Temporary files of
writes in progress or interrupted, symlinks and names nexcage does not
write are left alone and listed; check --repair judges those.

--dry-run lists what would go, with sizes and the total, and changes
nothing.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			storeFlag(fs, o)
			checkedVar(fs, &o.olderThan, "older-than", "", checkAge, "also remove images and cached chains not used for this long (e.g. 30d, 12h)")
			fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be removed, with sizes, and remove nothing")
		},
		run: runPrune,
	})
}

// parseAge reads --older-than: a Go duration (90m, 12h) or whole days
// (30d) or weeks (2w), which is how store ages are thought of.
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v <= 0 || v > 100000 {
				break
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, badValuef("%q is not an age; write a positive number of days (30d), weeks (2w), or a duration (12h, 90m)", s)
	}
	return d, nil
}

func checkAge(s string) error { _, err := parseAge(s); return err }

func runPrune(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 0 {
		return nil, usagef("prune takes no arguments, got %d", len(args))
	}
	age, err := parseAge(e.olderThan)
	if err != nil {
		return nil, usagef("--older-than: %v", err)
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}
	res, err := store.Prune(ctx, rootfs.PruneOptions{OlderThan: age, DryRun: e.dryRun, Progress: e.progress})
	if err != nil {
		return nil, err
	}
	if e.json {
		return res, nil
	}
	verb, total := "removed", "freed"
	if res.DryRun {
		verb, total = "would remove", "would free"
	}
	count := map[string]int{}
	for _, it := range res.Removed {
		count[it.Kind]++
		line := fmt.Sprintf("%s %s %s", verb, it.Kind, it.Name)
		if it.Kind != rootfs.PruneImage || it.Size > 0 {
			line += " (" + progress.HumanBytes(it.Size) + ")"
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", line, it.Reason)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(e.stdout, "left alone %s\n", s)
	}
	fmt.Fprintf(e.stdout, "%s %s in %s: %d image(s), %d blob(s), %d cached chain(s); kept %d image(s), %d blob(s), %d cached chain(s)\n",
		total, progress.HumanBytes(res.Freed), res.Store, count[rootfs.PruneImage], count[rootfs.PruneBlob], count[rootfs.PruneCache], res.KeptImages, res.KeptBlobs, res.KeptCache)
	return nil, nil
}

// pruneHint words the store's refusal while in use for the command line.
func pruneHint(_ *env, err error) error {
	if errors.Is(err, rootfs.ErrStoreInUse) {
		return suffixHint(err, "run nexcage prune again when the running pull or build ends")
	}
	return err
}
