package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestLinesReporter(t *testing.T) {
	var buf bytes.Buffer
	r := &lines{w: &buf}
	r.Step("pulling %s", "x")
	c := r.Bytes("layer 1/1", 2048)
	c.Add(2048)
	c.Done("done")
	r.Bytes("layer 2/2", 10).Done("already stored")
	r.Warn("careful")
	out := buf.String()
	for _, want := range []string{"pulling x\n", "layer 1/1: done, 2.0 KiB at ", "layer 2/2: already stored\n", "warning: careful\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("plain output contains terminal escapes")
	}
}

func TestBarsRedrawAndFinish(t *testing.T) {
	var buf bytes.Buffer
	b := newBars(&buf)
	c := b.Bytes("layer 1/1", 100)
	c.Add(50)
	b.Step("step")
	c.Done("done")
	out := buf.String()
	if !strings.Contains(out, "[===============               ] 50 B / 100 B") {
		t.Errorf("no half-full bar drawn:\n%q", out)
	}
	if !strings.Contains(out, "layer 1/1: done, 50 B") {
		t.Errorf("finished item not printed:\n%q", out)
	}
	if b.stop != nil {
		t.Error("the redraw loop still runs after the last bar ended")
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestQuietKeepsWarningsAndRecorderKeepsThem: -q hides steps and byte
// counters but never a warning, and a Recorder keeps every warning, in
// order and with its image's prefix, while passing it on.
func TestQuietKeepsWarningsAndRecorderKeepsThem(t *testing.T) {
	var buf bytes.Buffer
	quiet := warnOnly{&lines{w: &buf}}
	rec := Record(quiet)
	if ws := rec.Warnings(); ws == nil || len(ws) != 0 {
		t.Errorf("no warnings yet: %#v, want an empty non-nil list", ws)
	}
	rec.Step("pulling %s", "x")
	rec.Bytes("layer", 10).Done("done")
	rec.Warn("dropped %d", 2)
	WarnPrefix(rec, "img: ").Warn("retrying")
	if got, want := buf.String(), "warning: dropped 2\nwarning: img: retrying\n"; got != want {
		t.Errorf("quiet output %q, want %q", got, want)
	}
	if ws := rec.Warnings(); len(ws) != 2 || ws[0] != "dropped 2" || ws[1] != "img: retrying" {
		t.Errorf("recorded %q", ws)
	}
}
