package progress

import "io"

// Reader counts what it reads from R on C: a download, a layer or a
// template file read through it moves its progress bar.
type Reader struct {
	R io.Reader
	C Counter
}

// Read reads from R and adds the bytes read to C.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	r.C.Add(n)
	return n, err
}
