package lxc

import (
	"errors"
	"reflect"
	"testing"
)

func TestSplitWordsStrictRefusesAnUnclosedQuote(t *testing.T) {
	// LXC keeps "echo" and silently drops the rest: a flag value must not.
	if got := SplitWords(`echo 'hello world`); !reflect.DeepEqual(got, []string{"echo"}) {
		t.Fatalf("SplitWords = %q, want LXC's [echo]", got)
	}
	if _, err := SplitWordsStrict(`echo 'hello world`); !errors.Is(err, ErrUnclosedQuote) {
		t.Errorf("unclosed ': err %v, want ErrUnclosedQuote", err)
	}
	if _, err := SplitWordsStrict(`echo "hello`); !errors.Is(err, ErrUnclosedQuote) {
		t.Errorf("unclosed \": err %v, want ErrUnclosedQuote", err)
	}
	got, err := SplitWordsStrict(`echo 'hello world' "a b" c`)
	if err != nil || !reflect.DeepEqual(got, []string{"echo", "hello world", "a b", "c"}) {
		t.Errorf("closed quotes: %q, %v", got, err)
	}
}
