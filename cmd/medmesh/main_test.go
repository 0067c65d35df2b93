package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"medmesh": main,
	})
}

// requireAll is set by CI: a test that would skip for a missing tool fails.
func requireAll() bool { return os.Getenv("MEDMESH_REQUIRE_ALL") == "1" }

// TestScripts runs the CLI golden scripts in testdata/*.txtar: the whole
// enrolment flow as a user types it, checked by openssl where present.
func TestScripts(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil && requireAll() {
		t.Fatal("openssl is missing and MEDMESH_REQUIRE_ALL=1")
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// capture VAR REGEXP: set VAR to the first submatch of REGEXP in
			// the last command's stdout.
			"capture": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: capture VAR REGEXP")
				}
				m := regexp.MustCompile(args[1]).FindStringSubmatch(ts.ReadFile("stdout"))
				if len(m) < 2 {
					ts.Fatalf("capture: %q not found in stdout", args[1])
				}
				ts.Setenv(args[0], m[1])
			},
			// waitglob PATTERN: wait (up to a minute) until a file matches;
			// ! waitglob PATTERN: check that none does now.
			"waitglob": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: waitglob PATTERN")
				}
				pattern := ts.MkAbs(args[0])
				if neg {
					if m, _ := filepath.Glob(pattern); len(m) > 0 {
						ts.Fatalf("%s exists", m[0])
					}
					return
				}
				for end := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
					if m, _ := filepath.Glob(pattern); len(m) > 0 {
						return
					}
					if time.Now().After(end) {
						ts.Fatalf("no file matches %s within a minute", pattern)
					}
				}
			},
		},
	})
}
