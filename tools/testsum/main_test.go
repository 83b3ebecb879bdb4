package main

import (
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	const events = `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"    a_test.go:9: quiet log\n"}
{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":12.5}
{"Action":"pass","Package":"p","Test":"TestOK/sub","Elapsed":30}
{"Action":"output","Package":"p","Test":"TestRoot","Output":"=== RUN   TestRoot\n"}
{"Action":"output","Package":"p","Test":"TestRoot","Output":"    a_test.go:12: needs root (mounts)\n"}
{"Action":"output","Package":"p","Test":"TestRoot","Output":"--- SKIP: TestRoot (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestRoot"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    a_test.go:20: boom\n"}
{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":40}
{"Action":"output","Package":"p","Output":"PASS\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.01s\n"}
not json: printed as is
`
	var out strings.Builder
	s := newSummary(&out)
	if err := s.read(strings.NewReader(events)); err != nil {
		t.Fatal(err)
	}
	s.finish()
	got := out.String()
	for _, want := range []string{
		"a_test.go:20: boom\n",
		"FAIL\tp\t0.01s\n",
		"not json: printed as is\n",
		"SKIP p TestRoot: needs root (mounts)\n",
		"FAILED p TestBad\n",
		"tests: 2 passed, 1 failed, 1 skipped\n",
		"SLOW   40.0s p TestBad\nSLOW   12.5s p TestOK\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"quiet log", "PASS\n", "TestOK/sub"} {
		if strings.Contains(got, not) {
			t.Errorf("output has %q:\n%s", not, got)
		}
	}
}
