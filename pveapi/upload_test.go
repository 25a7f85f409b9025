package pveapi

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexcage/nexcage/progress"
)

// pveproxyFields reads the fields before the file the way pveproxy's
// file_upload_multipart does (PVE::APIServer::AnyEvent, phase 1): only
// content, checksum-algorithm and checksum, in that order, each anchored
// at the start of what is left, then the file part, whose field must be
// "filename" and whose file name stops at the first double quote.
func pveproxyFields(t *testing.T, head, boundary string) (map[string]string, bool) {
	t.Helper()
	delim := `--` + regexp.QuoteMeta(boundary) + `\r?\n`
	params := map[string]string{}
	untilData := regexp.MustCompile(`(?s)^.*?(\r?\n){2}`)
	value := regexp.MustCompile(`(?s)^(.*?)(` + delim + `)`)
	for _, name := range []string{"content", "checksum-algorithm", "checksum"} {
		// s/^DELIM.*?Content-Disposition: (.*?); name="NAME"(.*?DELIM)/$2/s
		re := regexp.MustCompile(`(?s)^` + delim + `.*?Content-Disposition: (.*?); name="` + name + `"(.*?` + delim + `)`)
		m := re.FindStringSubmatchIndex(head)
		if m == nil {
			continue
		}
		if head[m[2]:m[3]] != "form-data" {
			t.Errorf("field %s: disposition %q", name, head[m[2]:m[3]])
		}
		head = head[m[4]:m[5]] + head[m[1]:]
		if m := untilData.FindStringIndex(head); m != nil {
			head = head[m[1]:]
		}
		v := value.FindStringSubmatchIndex(head)
		if v == nil {
			t.Fatalf("field %s: no value in %q", name, head)
		}
		params[name] = strings.TrimSpace(head[v[2]:v[3]])
		head = head[v[4]:]
	}
	file := regexp.MustCompile(`(?s)^` + delim + `Content-Disposition: (.*?); name="(.*?)"; filename="([^"]+)"\r?\n`).FindStringSubmatch(head)
	if file == nil {
		return params, false
	}
	if file[2] != "filename" {
		t.Errorf("file field %q, pveproxy wants 'filename'", file[2])
	}
	params["filename"] = file[3]
	return params, true
}

type countingReporter struct {
	progress.Reporter
	bytes atomic.Int64
	mu    sync.Mutex
	notes []string
	total int64
}

func (r *countingReporter) Bytes(label string, total int64) progress.Counter {
	r.total = total
	return countingCounter{r}
}

type countingCounter struct{ r *countingReporter }

func (c countingCounter) Add(n int) { c.r.bytes.Add(int64(n)) }
func (c countingCounter) Done(note string) {
	c.r.mu.Lock()
	c.r.notes = append(c.r.notes, note)
	c.r.mu.Unlock()
}

// TestUploadStreamed uploads a 200 MiB (sparse) template: the request has
// a Content-Length and no chunking (pveproxy refuses chunked bodies),
// the fields are where pveproxy's parser looks for them, the bytes and
// checksum arrive intact, and the heap never grows by the file's size.
func TestUploadStreamed(t *testing.T) {
	const size = 200 << 20
	file := filepath.Join(t.TempDir(), "app_1.0_amd64.tar.zst")
	fh, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	// A few non-zero bytes at both ends, so a truncated or shifted body
	// would change the sum.
	fh.WriteAt([]byte("head"), 0)
	fh.WriteAt([]byte("tail"), size-4)
	fh.Close()
	h := sha256.New()
	rf, _ := os.Open(file)
	io.Copy(h, rf)
	rf.Close()
	want := hex.EncodeToString(h.Sum(nil))

	var got struct {
		params map[string]string
		sum    string
		n      int64
	}
	f := newFake(t)
	f.handle("POST /nodes/pve/storage/local/upload", func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength <= size || len(r.TransferEncoding) > 0 {
			t.Errorf("Content-Length %d, Transfer-Encoding %v: pveproxy needs the length and refuses chunked", r.ContentLength, r.TransferEncoding)
		}
		ct, ps, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || ct != "multipart/form-data" || ps["boundary"] == "" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
			reply(w, 501, "upload 'Content-Type' not implemented", nil, nil)
			return
		}
		br := bufio.NewReaderSize(r.Body, 4096)
		head, _ := br.Peek(2048)
		params, ok := pveproxyFields(t, string(head), ps["boundary"])
		if !ok {
			t.Errorf("pveproxy would not find the file part in %q", head)
		}
		got.params = params
		mr := multipart.NewReader(br, ps["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("multipart: %v", err)
				return
			}
			if p.FormName() == "filename" {
				sum := sha256.New()
				got.n, _ = io.CopyBuffer(sum, p, make([]byte, 64<<10))
				got.sum = hex.EncodeToString(sum.Sum(nil))
			}
		}
		reply(w, 200, "", "UPID:pve:00001234:00005678:65F0A1B2:imgcopy::root@pam!ci:", nil)
	})
	ts := httptest.NewServer(f)
	defer ts.Close()
	rep := &countingReporter{Reporter: progress.Discard}
	c := newClient(t, Config{URL: ts.URL, Token: testToken, Progress: rep})

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	upid, err := c.UploadTemplate(context.Background(), "pve", "local", file, strings.ToUpper(want))
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(upid, ":imgcopy:") {
		t.Fatalf("UPID %q", upid)
	}
	if got.n != size || got.sum != want {
		t.Fatalf("server got %d bytes with sha256 %s, want %d and %s", got.n, got.sum, size, want)
	}
	wantParams := map[string]string{"content": "vztmpl", "checksum-algorithm": "sha256", "checksum": want, "filename": "app_1.0_amd64.tar.zst"}
	for k, v := range wantParams {
		if got.params[k] != v {
			t.Errorf("pveproxy reads %s = %q, want %q", k, got.params[k], v)
		}
	}
	if growth := int64(peak.Load()) - int64(base.HeapInuse); growth > 32<<20 {
		t.Fatalf("heap grew by %d MiB uploading %d MiB: the file is buffered, not streamed", growth>>20, size>>20)
	}
	if rep.bytes.Load() != size || rep.total != size || len(rep.notes) != 1 || rep.notes[0] != "uploaded" {
		t.Fatalf("progress: %d of %d bytes, notes %v", rep.bytes.Load(), rep.total, rep.notes)
	}
}

func TestUploadRefusals(t *testing.T) {
	f := newFake(t)
	f.handle("POST /nodes/pve/storage/local/upload", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a refused upload reached the server")
	})
	_, c := f.serve(t)
	ctx := context.Background()
	dir := t.TempDir()
	for name, call := range map[string]func() error{
		"quote in name": func() error {
			p := filepath.Join(dir, `a"b.tar.zst`)
			os.WriteFile(p, []byte("x"), 0o644)
			_, err := c.UploadTemplate(ctx, "pve", "local", p, "")
			return err
		},
		"bad checksum": func() error {
			_, err := c.UploadTemplate(ctx, "pve", "local", writeFile(t, "a.tar.zst", "x"), "abc")
			return err
		},
		"directory": func() error { _, err := c.UploadTemplate(ctx, "pve", "local", dir, ""); return err },
		"missing": func() error {
			_, err := c.UploadTemplate(ctx, "pve", "local", filepath.Join(dir, "none.tar.zst"), "")
			return err
		},
	} {
		err := call()
		var e *Error
		if !errors.As(err, &e) || (e.Kind != BadParam && e.Kind != NotFound) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
