package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testimage"
)

var soakN = flag.Int("soak.n", 400, "iterations of the soak test (make soak runs 10000)")

// TestSoak runs, in one process, list over a store of 50 images, build of
// a small image with a cache hit and a cache miss, and convert of a
// bundle, -soak.n iterations in all, sampling heap in use, RSS and
// goroutines 20 times. The rule: once warmed up (after the first fifth),
// the highest of the last five samples may not exceed the highest of the
// first five warm samples by more than 10% plus a small absolute slack
// (heap 2 MiB, RSS 8 MiB, goroutines 0); otherwise something grows without
// bound. Highest of five, not single samples: a build's pooled 4 MiB frame
// buffers are alive at one sample and collected at the next, a bounded
// swing that a single-sample rule mistook for growth.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak test is not short")
	}
	dir := t.TempDir()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	store := filepath.Join(dir, "store")
	nx := func(args ...string) {
		t.Helper()
		if code := run(args, null, null); code != 0 {
			t.Fatalf("nexcage %s exited %d", strings.Join(args, " "), code)
		}
	}

	cases, err := testimage.Corpus()
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "layout")
	var small []string
	for _, c := range cases {
		if c.Image != nil && !c.RootOnly && !strings.HasPrefix(c.Name, "alpine") {
			small = append(small, c.Name)
		}
	}
	for i := 0; i < 50; i++ {
		c := cases[0]
		for _, cc := range cases {
			if cc.Name == small[i%len(small)] {
				c = cc
			}
		}
		tag := fmt.Sprintf("img%02d", i)
		if err := testimage.WriteLayout(layoutDir, tag, c); err != nil {
			t.Fatal(err)
		}
		nx("pull", "-q", "--store", store, "oci:"+layoutDir+":"+tag)
	}
	image := "oci:" + layoutDir + ":img00"
	out := filepath.Join(dir, "out") + "/"
	nx("build", "-q", "--store", store, image, "-o", out, "--name", "soak")
	bundle := filepath.Join(dir, "bundle")
	nx("unpack", "-q", "--store", store, image, bundle)

	type sample struct {
		iter                int
		heap, rss, routines int64
	}
	var samples []sample
	every := max(*soakN/20, 1)
	for i := 1; i <= *soakN; i++ {
		switch i % 4 {
		case 0:
			nx("list", "--store", store, "--json")
		case 1:
			nx("build", "-q", "--store", store, image, "-o", out, "--name", "soak") // up to date
		case 2:
			nx("build", "-q", "--force", "--store", store, image, "-o", out, "--name", "soak")
		case 3:
			nx("convert", "-q", bundle, "-o", filepath.Join(dir, "conv")+"/", "--name", "soak")
		}
		if i%every == 0 {
			// Twice: frame buffers pooled for the next build survive
			// one collection in sync.Pool's victim cache, and whether
			// a sample counted a few of them or none was noise of 4 MiB
			// steps, not growth.
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			samples = append(samples, sample{i, int64(ms.HeapInuse), rss(t), int64(runtime.NumGoroutine())})
		}
	}
	t.Logf("%10s %12s %12s %11s", "iteration", "heap in use", "RSS", "goroutines")
	for _, s := range samples {
		t.Logf("%10d %12d %12d %11d", s.iter, s.heap, s.rss, s.routines)
	}
	if len(samples) < 10 {
		t.Fatalf("%d samples are too few to tell growth from noise: run at least 200 iterations", len(samples))
	}
	warm := len(samples) / 5
	early, late := samples[warm:warm+5], samples[len(samples)-5:]
	highest := func(ss []sample, v func(sample) int64) int64 {
		m := v(ss[0])
		for _, s := range ss[1:] {
			m = max(m, v(s))
		}
		return m
	}
	check := func(what string, v func(sample) int64, slack int64) {
		b, l := highest(early, v), highest(late, v)
		if float64(l) > float64(b)*1.10+float64(slack) {
			t.Errorf("%s grows: at most %d in iterations %d-%d, up to %d in %d-%d", what, b, early[0].iter, early[4].iter, l, late[0].iter, late[4].iter)
		}
	}
	check("heap in use", func(s sample) int64 { return s.heap }, 2<<20)
	check("RSS", func(s sample) int64 { return s.rss }, 8<<20)
	check("goroutines", func(s sample) int64 { return s.routines }, 0)
}

func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm to read RSS from")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
