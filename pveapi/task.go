package pveapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TaskStatus is GET /nodes/{node}/tasks/{upid}/status.
type TaskStatus struct {
	UPID       string `json:"upid"`
	Node       string `json:"node"`
	Type       string `json:"type"` // vzcreate, vzstart, imgcopy, ...
	ID         string `json:"id"`
	User       string `json:"user"`
	Status     string `json:"status"`     // running, stopped
	ExitStatus string `json:"exitstatus"` // OK, WARNINGS: N, or the error
}

// OK reports a task that ended without error (warnings included).
func (s TaskStatus) OK() bool {
	return s.ExitStatus == "OK" || strings.HasPrefix(s.ExitStatus, "WARNINGS")
}

// Poll intervals of WaitTask: short at first (most tasks take a second),
// longer for a long task.
var (
	pollFirst = 100 * time.Millisecond
	pollMax   = 2 * time.Second
)

// WaitTask polls a task until it has stopped and returns its status; an
// exit status other than OK (or warnings) is a *TaskError with the last
// lines of its log. It waits as long as ctx allows.
func (c *Client) WaitTask(ctx context.Context, node, upid string) (TaskStatus, error) {
	if !strings.HasPrefix(upid, "UPID:") {
		return TaskStatus{}, &Error{Kind: BadParam, Msg: fmt.Sprintf("%q is not a PVE task ID", clip(upid, 80)), Fix: "give the UPID PVE answered"}
	}
	p := path("nodes", node, "tasks", upid, "status")
	wait := pollFirst
	failed := 0
	for {
		var st TaskStatus
		_, err := c.do(ctx, request{method: http.MethodGet, path: p, what: fmt.Sprintf("read the status of task %s", upid)}, &st)
		switch {
		case err == nil:
			failed = 0
		case ctx.Err() != nil:
		case transient(err) && failed < taskPollErrors:
			// The task runs on whatever its poll met: giving up on it
			// would have the caller undo what it is still making.
			failed++
		default:
			return st, err
		}
		if err == nil && st.Status != "running" && st.Status != "" {
			if st.OK() {
				return st, nil
			}
			te := &TaskError{Node: node, UPID: upid, Type: st.Type, ID: st.ID, ExitStatus: st.ExitStatus}
			te.Kind = classify(500, st.ExitStatus, nil)
			if te.Kind == BadParam {
				te.Kind = Failed
			}
			// The log is what explains the failure; without it the
			// exit status still does.
			te.Log, _ = c.taskLog(ctx, node, upid)
			c.scrubTask(te)
			return st, te
		}
		select {
		case <-ctx.Done():
			return st, &Error{Kind: Timeout, Method: http.MethodGet, Path: unescape(p), Msg: fmt.Sprintf("task %s did not end in time", upid), Fix: "it may still be running on the node: see its task log there", Err: ctx.Err()}
		case <-time.After(wait):
		}
		if wait *= 2; wait > pollMax {
			wait = pollMax
		}
	}
}

// taskPollErrors is how many status polls of a task in a row may fail
// with a transient error (each after do's own retries) before WaitTask
// gives up.
const taskPollErrors = 3

// transient is an error a later request may not meet: no connection, no
// answer in time, a server error.
func transient(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Kind == Connection || e.Kind == Timeout || (e.Status >= 500 && e.Status != 501))
}

type logLine struct {
	N Int    `json:"n"`
	T string `json:"t"`
}

// taskLog returns the last TaskLogLines lines of a task's log.
func (c *Client) taskLog(ctx context.Context, node, upid string) ([]string, error) {
	p := path("nodes", node, "tasks", upid, "log")
	get := func(start int) ([]logLine, int, error) {
		var lines []logLine
		form := url.Values{"start": {strconv.Itoa(start)}, "limit": {strconv.Itoa(TaskLogLines)}}
		env, err := c.do(ctx, request{method: http.MethodGet, path: p, what: fmt.Sprintf("read the log of task %s", upid), form: form}, &lines)
		if err != nil {
			return nil, 0, err
		}
		total := len(lines)
		if env.Total != nil {
			total = *env.Total
		}
		return lines, total, nil
	}
	lines, total, err := get(0)
	if err != nil {
		return nil, err
	}
	if total > TaskLogLines {
		if more, _, err := get(total - TaskLogLines); err == nil {
			lines = more
		}
	}
	if len(lines) > TaskLogLines {
		lines = lines[len(lines)-TaskLogLines:]
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, clip(strings.TrimRight(l.T, "\r\n"), maxLogLine))
	}
	return out, nil
}

func (c *Client) scrubTask(te *TaskError) {
	for _, s := range c.secretTexts() {
		te.ExitStatus = strings.ReplaceAll(te.ExitStatus, s, redacted)
		for i := range te.Log {
			te.Log[i] = strings.ReplaceAll(te.Log[i], s, redacted)
		}
	}
}
