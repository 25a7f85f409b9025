package pveapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nexcage/nexcage/progress"
)

var reSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// UploadTemplate uploads a container template file to a storage (POST
// /nodes/{node}/storage/{storage}/upload, content vztmpl) under its base
// name. With sha256 (hex), PVE verifies the file against it before
// storing it. It returns the UPID of PVE's task that moves the file into
// place; WaitTask waits for it.
//
// The file is streamed from disk, never held in memory, with its length
// known beforehand: pveproxy refuses chunked request bodies.
func (c *Client) UploadTemplate(ctx context.Context, node, storage, file, sha256 string) (string, error) {
	name := filepath.Base(file)
	what := fmt.Sprintf("upload %s to storage '%s' on node '%s'", name, storage, node)
	p := path("nodes", node, "storage", storage, "upload")
	refuse := func(kind Kind, msg, fix string) error {
		return &Error{Kind: kind, Method: http.MethodPost, Path: unescape(p), Msg: "cannot " + what + ": " + msg, Fix: fix}
	}
	// pveproxy's multipart parser takes the file name up to the first
	// double quote and reads its fields only in one order.
	if strings.ContainsAny(name, "\"\\\r\n") || strings.IndexFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return "", refuse(BadParam, "the file name holds a quote, backslash or control character", "rename the template file")
	}
	sha256 = strings.ToLower(strings.TrimSpace(sha256))
	if sha256 != "" && !reSHA256.MatchString(sha256) {
		return "", refuse(BadParam, "the checksum is not a SHA-256 in hex", "give the template's sha256 as 64 hex digits")
	}
	f, err := os.Open(file)
	if err != nil {
		return "", refuse(NotFound, err.Error(), "check the template file")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", refuse(Failed, err.Error(), "check the template file")
	}
	if !st.Mode().IsRegular() {
		return "", refuse(BadParam, "it is not a regular file", "give the template file itself")
	}
	size := st.Size()

	// The parts before and after the file's bytes are small and built
	// here; the file itself is read as the request is sent.
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	fields := [][2]string{{"content", "vztmpl"}}
	if sha256 != "" {
		fields = append(fields, [2]string{"checksum-algorithm", "sha256"}, [2]string{"checksum", sha256})
	}
	for _, kv := range fields {
		if err := mw.WriteField(kv[0], kv[1]); err != nil {
			return "", refuse(Failed, err.Error(), "")
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="filename"; filename="%s"`, name))
	h.Set("Content-Type", "application/octet-stream")
	if _, err := mw.CreatePart(h); err != nil {
		return "", refuse(Failed, err.Error(), "")
	}
	prefix := append([]byte(nil), head.Bytes()...)
	head.Reset()
	if err := mw.Close(); err != nil {
		return "", refuse(Failed, err.Error(), "")
	}
	suffix := head.Bytes()

	counter := c.progress.Bytes("uploading "+name, size)
	uploaded := false
	defer func() {
		if uploaded {
			counter.Done("uploaded")
		} else {
			counter.Done("failed")
		}
	}()
	r := request{
		method: http.MethodPost, path: p, what: what,
		body: func() (io.Reader, error) {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return nil, refuse(Failed, err.Error(), "check the template file")
			}
			body := &exactReader{r: f, left: size, name: name, counter: counter}
			return io.MultiReader(bytes.NewReader(prefix), body, bytes.NewReader(suffix)), nil
		},
		contentType:   mw.FormDataContentType(),
		contentLength: int64(len(prefix)) + size + int64(len(suffix)),
		noTimeout:     true,
	}
	upid, err := c.upid(ctx, r)
	uploaded = err == nil
	return upid, err
}

// exactReader reads exactly left bytes: a file that shrinks while it is
// sent fails the upload instead of sending a body shorter than announced.
type exactReader struct {
	r       io.Reader
	left    int64
	name    string
	counter progress.Counter
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	e.counter.Add(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, fmt.Errorf("%s became shorter while it was uploaded: %w", e.name, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}
