package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/witness"
)

func newAuditCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Verify and export a stopped device's audit trail",
		Long: `Every device keeps an audit trail in its encrypted store: a hash-chained log of
events (sent, received, read, acknowledged, photo viewed, edited, deleted,
member added/removed, unlocked, locked, unlock failed, CRL applied, wiped),
each signed by the device key, holding IDs, hashes and times — never message
text or photos. These commands read the directory of a stopped node.`,
	}
	c.AddCommand(newAuditVerifyCmd(e), newAuditExportCmd(e), newAuditHeadCmd(e))
	return c
}

// openAudit opens DEV's trail with the device passphrase.
func openAudit(e *env, dir string) (*device.AuditFile, error) {
	pass, err := e.passphrase(envDevicePass, "device", false)
	if err != nil {
		return nil, err
	}
	return device.OpenAudit(dir, pass)
}

func newAuditVerifyCmd(e *env) *cobra.Command {
	var dir, headFile string
	c := &cobra.Command{
		Use:   "verify --dir DEV [--head FILE]",
		Short: "Check the chain, every signature and the head; exit non-zero naming the first broken or missing entry",
		Long: `Check every entry from the first: its signature by this device's key, its
place in the sequence, its link to the entry before, its time; then the stored
head. A truncated tail is shown only against a head kept elsewhere: --head
FILE (written by 'medmesh audit head', on this directory earlier or on an
anchor's directory with --peer). Without --head, the answer a witness (an
anchor or archive member) signed while the device ran is used: it must be
signed by the witness it names (never the device itself), and it must name no
conflicting head (a head of this device that does not extend the one the
witness held). An answer whose signer's certificate does not verify under this
directory's trust roots with the role anchor or archive, at the answer's time,
is reported as "witness answer unusable" and the trail as not witnessed, as
with no kept answer. An answer the log failed while the device ran (a
truncation or rewrite a witness showed; the first of each witness is kept)
fails verify for as long as the log still fails it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := openAudit(e, dir)
			if err != nil {
				return err
			}
			defer a.Close()
			var ext *audit.Head
			if headFile != "" {
				raw, err := readFile("audit head", headFile)
				if err != nil {
					return err
				}
				h, err := audit.ParseHead(raw, a.Key)
				if err != nil {
					return fmt.Errorf("%s: %w", headFile, err)
				}
				if c, err := audit.ParseConflict(raw, a.Key); err != nil {
					return fmt.Errorf("%s: %w", headFile, err)
				} else if c != nil && !witness.Disproved(cmd.Context(), a.Reader, h, *c) {
					return fmt.Errorf("audit trail of %s does not verify: %w: the witness holds entry %d and was given entry %d (hash %x) that does not extend it",
						a.PeerID, witness.ErrConflict, h.Seq, c.Seq, c.Hash[:8])
				}
				ext = &h
			}
			from := "the given head"
			witnessed := headFile != ""
			var unusable error
			if ext == nil {
				ans, ok, bad, err := a.Witnessed(cmd.Context())
				if err != nil {
					return fmt.Errorf("audit trail of %s does not verify: %w", a.PeerID, err)
				}
				unusable = bad
				if ok {
					if ans.Conflict != nil {
						if err := ans.Check(cmd.Context(), a.Reader); err != nil {
							return fmt.Errorf("audit trail of %s does not verify: %w", a.PeerID, err)
						}
					}
					witnessed = true
					if ans.Held.Seq > 0 {
						ext, from = &ans.Held, fmt.Sprintf("the head a witness held at %s (%s, signed by it)", ans.Time.Format(time.RFC3339), ans.Witness)
					}
				}
			}
			// What a witness once showed stays shown: every failing answer
			// kept must still fail to mean anything (a log that now vouches
			// for its heads has disproved it).
			failed, _, err := a.FailedAnswers(cmd.Context())
			if err != nil {
				return fmt.Errorf("audit trail of %s does not verify: %w", a.PeerID, err)
			}
			for _, f := range failed {
				if err := f.Check(cmd.Context(), a.Reader); err != nil {
					return fmt.Errorf("audit trail of %s does not verify: witness %s answered at %s: %w", a.PeerID, f.Witness, f.Time.Format(time.RFC3339), err)
				}
			}
			s, err := a.Verify(cmd.Context(), ext)
			if err != nil {
				return fmt.Errorf("audit trail of %s does not verify: %w", a.PeerID, err)
			}
			msg := fmt.Sprintf("audit trail of %s: %d entries verify", a.PeerID, s.Entries)
			if s.Entries > 0 {
				msg += fmt.Sprintf(", %s to %s, head %s", s.First.Format(time.RFC3339), s.Last.Format(time.RFC3339), hex.EncodeToString(s.Hash[:8]))
			}
			if ext != nil {
				msg += fmt.Sprintf("; holds entry %d of %s", ext.Seq, from)
			}
			switch {
			case !witnessed && unusable != nil:
				msg += fmt.Sprintf("; not witnessed (%v; check against an anchor's copy with --head)", unusable)
			case !witnessed:
				msg += "; not witnessed (no witness answer kept: check against an anchor's copy with --head)"
			}
			fmt.Fprintln(e.stdout, msg)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "device directory (node stopped)")
	c.Flags().StringVar(&headFile, "head", "", "a head exported earlier ('medmesh audit head'), to detect truncation")
	required(c, "dir")
	return c
}

func newAuditExportCmd(e *env) *cobra.Command {
	var dir, out, since string
	c := &cobra.Command{
		Use:   "export --dir DEV [--since TIME] [--out FILE]",
		Short: "Write the audit trail as JSON lines, one event per line, each with its hash and signature",
		Long: `Write one JSON object per line: seq, time, kind, ids, hash, prev, signature,
key (the device's Ed25519 public key, hex), peer_id and cbor (the signed bytes,
base64), so an auditor can verify each entry elsewhere:
hash = SHA-256("medmesh audit entry v1\x00" || cbor), and signature is Ed25519
over "medmesh audit signature v1\x00" || hash. --since takes an RFC 3339 time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var after time.Time
			if since != "" {
				t, err := time.Parse(time.RFC3339Nano, since)
				if err != nil {
					return fmt.Errorf("--since: want an RFC 3339 time such as 2026-03-01T08:00:00Z: %w", err)
				}
				after = t
			}
			a, err := openAudit(e, dir)
			if err != nil {
				return err
			}
			defer a.Close()
			if out == "" {
				_, err := exportLines(cmd.Context(), a, after, e.stdout)
				return err
			}
			var buf bufferWriter
			n, err := exportLines(cmd.Context(), a, after, &buf)
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out, buf.b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "%d audit events written to %s\n", n, out)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "device directory (node stopped)")
	f.StringVar(&since, "since", "", "only events after this time (RFC 3339)")
	f.StringVar(&out, "out", "", "file to write (default: standard output)")
	required(c, "dir")
	return c
}

type bufferWriter struct{ b []byte }

func (w *bufferWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func exportLines(ctx context.Context, a *device.AuditFile, since time.Time, w io.Writer) (int, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	n := 0
	for {
		page, err := a.Since(ctx, since, 1000)
		if err != nil {
			return n, err
		}
		for _, en := range page {
			if err := enc.Encode(en.Line(a.PeerID.String())); err != nil {
				return n, err
			}
			n++
		}
		if len(page) < 1000 {
			return n, bw.Flush()
		}
		since = page[len(page)-1].Time
	}
}

func newAuditHeadCmd(e *env) *cobra.Command {
	var dir, out, of string
	c := &cobra.Command{
		Use:   "head --dir DEV [--peer ID] [--out FILE]",
		Short: "Write the trail's signed head, to keep elsewhere and check with 'audit verify --head'",
		Long: `Write the signed head of this device's audit trail; with --peer, on a
witness's directory (an anchor or archive member), the head of that device's
trail the witness holds — the newest the device deposited — to check the
device's trail with 'medmesh audit verify --dir DEV --head FILE'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := openAudit(e, dir)
			if err != nil {
				return err
			}
			defer a.Close()
			who := a.PeerID
			var h audit.Head
			var conflict *audit.Head
			var ok bool
			if of != "" {
				if who, err = peer.Decode(of); err != nil {
					return fmt.Errorf("--peer %q: not a peer ID: %w", of, err)
				}
				h, ok, err = a.HeldFor(cmd.Context(), who)
				if err == nil && !ok {
					return fmt.Errorf("%s holds no audit head of %s", dir, who)
				}
				if err == nil {
					var c audit.Head
					if c, ok, err = a.ConflictFor(cmd.Context(), who); err == nil && ok {
						conflict = &c
						fmt.Fprintf(e.stderr, "%s holds evidence against %s: entry %d, signed by it, does not extend the held entry %d\n",
							dir, who, c.Seq, h.Seq)
					}
				}
			} else {
				h, ok, err = a.Head(cmd.Context())
				if err == nil && !ok {
					return fmt.Errorf("the audit trail in %s is empty", dir)
				}
			}
			if err != nil {
				return err
			}
			raw, err := audit.MarshalHeadConflict(h, conflict, who.String())
			if err != nil {
				return err
			}
			raw = append(raw, '\n')
			if out == "" {
				_, err = e.stdout.Write(raw)
				return err
			}
			if err := atomicfile.WriteFile(out, raw, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "audit head (entry %d) written to %s\n", h.Seq, out)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "device directory (node stopped)")
	c.Flags().StringVar(&out, "out", "", "file to write (default: standard output)")
	c.Flags().StringVar(&of, "peer", "", "the device whose head this witness holds (on an anchor's or archive's directory)")
	required(c, "dir")
	return c
}
