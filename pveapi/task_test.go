package pveapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	upidOK   = "UPID:pve:0000AAAA:0000BBBB:65F0A1B2:vzcreate:100:root@pam!ci:"
	upidFail = "UPID:pve:0000AAAA:0000BBBC:65F0A1B3:vzcreate:101:root@pam!ci:"
	upidWarn = "UPID:pve:0000AAAA:0000BBBD:65F0A1B4:vzstart:102:root@pam!ci:"
	upidLong = "UPID:pve:0000AAAA:0000BBBE:65F0A1B5:vzcreate:103:root@pam!ci:"
)

func TestWaitTask(t *testing.T) {
	f := newFake(t)
	polls := 0
	f.handle("GET "+path("nodes", "pve", "tasks", upidOK, "status"), func(w http.ResponseWriter, r *http.Request) {
		status := "running"
		if polls++; polls >= 3 {
			status = "stopped"
		}
		reply(w, 200, "", map[string]any{"upid": upidOK, "status": status, "exitstatus": "OK", "type": "vzcreate", "id": "100", "node": "pve"}, nil)
	})
	f.handle("GET "+path("nodes", "pve", "tasks", upidFail, "status"), data(map[string]any{
		"upid": upidFail, "status": "stopped", "type": "vzcreate", "id": "101", "node": "pve",
		"exitstatus": "unable to create CT 101 - no space left on device",
	}))
	const logLen = 120
	f.handle("GET "+path("nodes", "pve", "tasks", upidFail, "log"), func(w http.ResponseWriter, r *http.Request) {
		start, _ := strconv.Atoi(r.URL.Query().Get("start"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		var lines []map[string]any
		for n := start + 1; n <= logLen && n <= start+limit; n++ {
			lines = append(lines, map[string]any{"n": n, "t": fmt.Sprintf("line %d", n)})
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":%s,"total":%d}`, mustJSON(lines), logLen)
	})
	f.handle("GET "+path("nodes", "pve", "tasks", upidWarn, "status"), data(map[string]any{"status": "stopped", "exitstatus": "WARNINGS: 2", "type": "vzstart", "id": "102"}))
	f.handle("GET "+path("nodes", "pve", "tasks", upidLong, "status"), data(map[string]any{"status": "running", "type": "vzcreate", "id": "103"}))
	_, c := f.serve(t)
	ctx := context.Background()

	st, err := c.WaitTask(ctx, "pve", upidOK)
	if err != nil || st.ExitStatus != "OK" || polls != 3 {
		t.Fatalf("WaitTask OK = %+v %v after %d polls", st, err, polls)
	}
	if st, err := c.WaitTask(ctx, "pve", upidWarn); err != nil || !st.OK() {
		t.Fatalf("a task with warnings succeeded: %+v %v", st, err)
	}

	_, err = c.WaitTask(ctx, "pve", upidFail)
	var te *TaskError
	if !errors.As(err, &te) {
		t.Fatalf("failed task: %v is not a *TaskError", err)
	}
	if te.ExitStatus != "unable to create CT 101 - no space left on device" || te.Type != "vzcreate" || te.ID != "101" || te.UPID != upidFail {
		t.Fatalf("TaskError %+v", te)
	}
	if len(te.Log) != TaskLogLines || te.Log[0] != fmt.Sprintf("line %d", logLen-TaskLogLines+1) || te.Log[len(te.Log)-1] != "line 120" {
		t.Fatalf("log tail: %d lines, %q ... %q", len(te.Log), te.Log[0], te.Log[len(te.Log)-1])
	}
	for _, s := range []string{"vzcreate 101", "no space left on device", "line 120"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q does not say %q", err, s)
		}
	}

	ctx2, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitTask(ctx2, "pve", upidLong); !errors.Is(err, Timeout) || !strings.Contains(err.Error(), "still be running") {
		t.Fatalf("a task outliving ctx: %v", err)
	}
	if _, err := c.WaitTask(ctx, "pve", "not-a-upid"); !errors.Is(err, BadParam) {
		t.Fatalf("bad UPID: %v", err)
	}
}

func TestTaskErrorKind(t *testing.T) {
	for status, kind := range map[string]Kind{
		"unable to create CT 100 - CT 100 already exists on node 'pve'":            AlreadyExists,
		"unable to create CT 100 - volume 'local:vztmpl/x.tar.zst' does not exist": NotFound,
		"checksum mismatch: got 'a' != expect 'b'":                                 Failed,
	} {
		if got := classify(500, status, nil); got != kind {
			t.Errorf("%q: %v, want %v", status, got, kind)
		}
	}
}

// TestWaitTaskPollErrors: a task's status polls that fail for a while
// (pveproxy restarting: 5xx answers beyond do's own retries) do not end
// the wait, since the task runs on; polls that keep failing do, after a
// bounded number of requests, with the poll's error.
func TestWaitTaskPollErrors(t *testing.T) {
	f := newFake(t)
	const upidFlaky = "UPID:pve:0000AAAA:0000BBBF:65F0A1B6:vzcreate:104:root@pam!ci:"
	const upidDown = "UPID:pve:0000AAAA:0000BBC0:65F0A1B7:vzcreate:105:root@pam!ci:"
	flaky := 0
	f.handle("GET "+path("nodes", "pve", "tasks", upidFlaky, "status"), func(w http.ResponseWriter, r *http.Request) {
		// Two polls' worth of failed requests (each poll is a GET and its
		// getRetries retries), then the task's end.
		if flaky++; flaky <= 2*(getRetries+1) {
			reply(w, 503, "proxy restarting", nil, nil)
			return
		}
		reply(w, 200, "", map[string]any{"upid": upidFlaky, "status": "stopped", "exitstatus": "OK", "type": "vzcreate", "id": "104", "node": "pve"}, nil)
	})
	route := "GET " + path("nodes", "pve", "tasks", upidDown, "status")
	f.handle(route, func(w http.ResponseWriter, r *http.Request) { reply(w, 500, "server down", nil, nil) })
	_, c := f.serve(t)
	ctx := context.Background()
	if st, err := c.WaitTask(ctx, "pve", upidFlaky); err != nil || !st.OK() {
		t.Errorf("a task whose polls failed twice, then ended: %+v %v", st, err)
	}
	_, err := c.WaitTask(ctx, "pve", upidDown)
	var e *Error
	if !errors.As(err, &e) || e.Status != 500 || !strings.Contains(err.Error(), "server down") {
		t.Errorf("polls that keep failing: %v, want the poll's 500", err)
	}
	if n, want := f.count(route), (taskPollErrors+1)*(getRetries+1); n != want {
		t.Errorf("polls that keep failing: %d requests, want %d", n, want)
	}
}
