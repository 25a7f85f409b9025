package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// buildResult is one image's outcome.
type buildResult struct {
	Image    string          `json:"image"`
	UpToDate bool            `json:"up_to_date"`
	Result   *convert.Result `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Seconds  float64         `json:"seconds"`
	// Stages is where the time went: "flatten" (pull and read the layers,
	// or unpack with --staged) and "write" (the template and sidecars).
	Stages map[string]float64 `json:"stage_seconds,omitempty"`
}

func runBuild(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) == 0 {
		return nil, usagef("build takes at least one IMAGE")
	}
	if err := checkOutput(e.conv, len(args)); err != nil {
		return nil, err
	}
	if e.deployAfter {
		if len(args) > 1 {
			return nil, usagef("--deploy deploys one template: build one IMAGE with it, got %d", len(args))
		}
		// Before the build, which may take long: a mistake in the deploy
		// flags is a usage error now, not after the template is written.
		if _, err := checkDeployFlags(e); err != nil {
			return nil, err
		}
	} else {
		for _, name := range deployOnlyFlags() {
			if e.flags != nil && e.flags.Changed(name) {
				return nil, usagef("--%s needs --deploy", name)
			}
		}
	}
	refs := make([]rootfs.Ref, len(args))
	var so rootfs.SourceOptions
	for i, a := range args {
		var err error
		if refs[i], so, err = imageArgs(e, a); err != nil {
			return nil, err
		}
	}
	opts, err := convertOptions(e)
	if err != nil {
		return nil, err
	}
	if len(args) > 1 && opts.Output == "" {
		opts.Output = "./"
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}

	results := make([]buildResult, len(refs))
	sem := make(chan struct{}, e.jobs)
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			stages := map[string]float64{}
			be, o := e, opts
			if len(refs) > 1 {
				c := *e
				c.progress = progress.WarnPrefix(e.progress, ref.String()+": ")
				be, o.Progress = &c, c.progress
			}
			res, fresh, err := buildOne(ctx, be, store, ref, so, o, stages)
			results[i] = buildResult{Image: ref.String(), UpToDate: !fresh && err == nil, Result: res, Seconds: time.Since(start).Seconds(), Stages: stages}
			if err != nil {
				results[i].Error = hint(be, err).Error()
			}
		}()
	}
	wg.Wait()

	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
		}
	}
	if len(refs) == 1 {
		r := results[0]
		if r.Error != "" {
			return nil, errors.New(r.Error)
		}
		if e.deployAfter {
			if !e.json {
				printResult(e, r.Result)
			}
			d, err := deployTemplate(ctx, e, r.Result.Template)
			if err != nil {
				return nil, fmt.Errorf("%s was built, but deploying it failed: %w", r.Result.Template, err)
			}
			return map[string]any{"build": r, "deploy": d}, nil
		}
		if !e.json {
			if r.UpToDate {
				fmt.Fprintf(e.stdout, "%s is up to date (built from %s)\n", r.Result.Template, r.Result.Metadata.Source.SourceDigest)
			} else {
				printResult(e, r.Result)
			}
		}
		return r, nil
	}
	if !e.json {
		printSummary(e, results)
	}
	out := map[string]any{"results": results, "failed": failed}
	if failed > 0 {
		return nil, &failedWith{result: out, err: fmt.Errorf("%d of %d builds failed", failed, len(refs))}
	}
	return out, nil
}

// buildOne builds one image unless its template is up to date; fresh says
// whether anything was written. It records each stage's seconds in stages.
func buildOne(ctx context.Context, e *env, store *rootfs.Store, ref rootfs.Ref, so rootfs.SourceOptions, opts convert.Options, stages map[string]float64) (*convert.Result, bool, error) {
	// Looked up once: for a local source it reads the source's digest.
	var img rootfs.Image
	stored := false
	if e.pull != "always" {
		var err error
		if img, stored, err = storedImage(ctx, e, store, ref, so); err != nil {
			return nil, false, err
		}
	}
	if !e.force {
		digest := func() (string, error) { return currentDigest(ctx, e, ref, so, img, stored) }
		if res, ok := convert.UpToDate(opts, ref.String(), digest); ok {
			e.progress.Step("%s: up to date", ref)
			return res, false, nil
		}
	}
	if e.staged {
		var err error
		if !stored {
			if img, err = pullMissing(ctx, e, store, ref, so); err != nil {
				return nil, false, err
			}
		} else {
			e.progress.Step("using %s (%s) from the store", ref, img.Platform)
		}
		res, err := buildStaged(ctx, e, store, img, opts, stages)
		return res, true, err
	}
	var f *rootfs.Flattened
	limit, err := parseSize(e.maxLayerSize)
	if err != nil {
		return nil, false, err
	}
	start := time.Now()
	// A zstd template's large files are compressed while the layers are
	// still being read, on cores that would otherwise wait for inflate.
	fopts := rootfs.FlattenOptions{Progress: e.progress, MaxLayerSize: limit, MaxEntries: e.maxEntries, PrecompressLevel: convert.PrecompressLevel(opts), Clamp: opts.SourceDateEpoch}
	if stored {
		e.progress.Step("using %s (%s) from the store", ref, img.Platform)
		f, err = store.Flatten(ctx, img, fopts)
		if err != nil {
			return nil, false, err
		}
	} else {
		if e.pull == "never" {
			return nil, false, fmt.Errorf("%w: %s (%s) is not in the store %s and --pull never forbids fetching it: run `nexcage pull` first", rootfs.ErrNotFound, ref, so.Platform, store.Dir)
		}
		// Decompress the layers while they download.
		_, f, err = store.PullFlatten(ctx, ref, rootfs.PullOptions{SourceOptions: so, Progress: e.progress}, fopts)
		if err != nil {
			return nil, false, err
		}
	}
	defer f.Close()
	stages["flatten"] = time.Since(start).Seconds()
	start = time.Now()
	res, err := convert.Write(ctx, f.Tree, f.Spec, opts)
	stages["write"] = time.Since(start).Seconds()
	return res, true, err
}

// currentDigest is the digest a build would use now: the stored image's
// when the pull policy lets it stand (see storedImage), else the source's.
func currentDigest(ctx context.Context, e *env, ref rootfs.Ref, so rootfs.SourceOptions, img rootfs.Image, stored bool) (string, error) {
	switch {
	case stored:
		return img.SourceDigest, nil
	case e.pull == "never":
		return "", rootfs.ErrNotFound
	}
	return rootfs.Resolve(ctx, ref, so)
}

func buildStaged(ctx context.Context, e *env, store *rootfs.Store, img rootfs.Image, opts convert.Options, stages map[string]float64) (*convert.Result, error) {
	work, err := os.MkdirTemp("", "nexcage-build-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a temporary directory for --staged (%w): set TMPDIR to a writable directory", err)
	}
	defer rootfs.RemoveBundle(work)
	limit, err := parseSize(e.maxLayerSize)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ures, err := store.Unpack(ctx, img, filepath.Join(work, "bundle"), rootfs.UnpackOptions{Rootless: os.Geteuid() != 0, Progress: e.progress, MaxLayerSize: limit, MaxEntries: e.maxEntries})
	if err != nil {
		return nil, err
	}
	stages["flatten"] = time.Since(start).Seconds()
	start = time.Now()
	b, err := convert.LoadBundle(ures.Bundle)
	if err != nil {
		return nil, err
	}
	res, err := convert.Convert(ctx, b, opts)
	stages["write"] = time.Since(start).Seconds()
	return res, err
}

func printSummary(e *env, results []buildResult) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tRESULT\tTEMPLATE")
	for _, r := range results {
		switch {
		case r.Error != "":
			fmt.Fprintf(tw, "%s\tFAILED\t%s\n", r.Image, r.Error)
		case r.UpToDate:
			fmt.Fprintf(tw, "%s\tup to date\t%s\n", r.Image, r.Result.Template)
		default:
			fmt.Fprintf(tw, "%s\tbuilt (%.1fs)\t%s\n", r.Image, r.Seconds, r.Result.Template)
		}
	}
	tw.Flush()
}
