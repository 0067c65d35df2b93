package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/medmesh/medmesh/keywrap"
)

// env is what commands need from the process, so tests can supply their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	kdf            *keywrap.Params // nil: keywrap.DefaultParams
}

func (e *env) time() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

func (e *env) params() keywrap.Params {
	if e.kdf != nil {
		return *e.kdf
	}
	return keywrap.DefaultParams
}

const (
	envDevicePass = "MEDMESH_PASSPHRASE"
	envCAPass     = "MEDMESH_CA_PASSPHRASE"
)

// passphrase reads a passphrase from the environment variable, or prompts on
// the terminal (twice when confirm is set, for a new secret).
func (e *env) passphrase(variable, what string, confirm bool) ([]byte, error) {
	if v := e.getenv(variable); v != "" {
		return []byte(v), nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%s passphrase: set %s or run on a terminal", what, variable)
	}
	defer tty.Close()
	read := func(prompt string) ([]byte, error) {
		fmt.Fprintf(tty, "%s: ", prompt)
		defer fmt.Fprintln(tty)
		if term.IsTerminal(int(tty.Fd())) {
			return term.ReadPassword(int(tty.Fd()))
		}
		line, err := bufio.NewReader(tty).ReadBytes('\n')
		return bytes.TrimRight(line, "\r\n"), err
	}
	p, err := read(what + " passphrase")
	if err != nil {
		return nil, fmt.Errorf("read %s passphrase: %w", what, err)
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("%s passphrase: %w", what, keywrap.ErrEmptyPassphrase)
	}
	if confirm {
		again, err := read("again")
		if err != nil {
			return nil, fmt.Errorf("read %s passphrase: %w", what, err)
		}
		if !bytes.Equal(p, again) {
			return nil, errors.New("passphrases do not match")
		}
	}
	return p, nil
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "medmesh",
		Short: "Peer-to-peer, offline-capable messenger for verified hospital staff",
		Long: strings.TrimSpace(`
medmesh is a peer-to-peer messenger for hospital staff. Every device runs a
node; a trust's certificate authority admits only verified staff.

Enrolling a device:
  medmesh ca init --dir CA --name "General Hospital"       (once, by the trust)
  medmesh init --dir DEV --name "Dr A" --staff-id A1 --ca CA/ca.crt
  medmesh ca sign --dir CA --csr DEV/device.csr --out DEV/device.crt
  medmesh cert verify --ca CA/ca.crt DEV/device.crt

Passphrases come from MEDMESH_PASSPHRASE (device) and MEDMESH_CA_PASSPHRASE
(CA), or a prompt.`),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCACmd(e), newInitCmd(e), newRenewCmd(e), newCertCmd(e), newRunCmd(e), newDemoCmd(e), newSimCmd(e), newAttackCmd(e), newBenchCmd(e), newAuditCmd(e), newExportCmd(e), newTrustCmd(e))
	return root
}

// required marks flags as required and fails early with a clear message.
func required(c *cobra.Command, names ...string) {
	for _, n := range names {
		if err := c.MarkFlagRequired(n); err != nil {
			panic(err)
		}
	}
}

func readFile(what, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}
