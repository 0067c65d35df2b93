package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/fhir"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/atomicfile"
)

func newExportCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "export",
		Short: "Export conversations from a stopped device's directory",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(newExportFHIRCmd(e))
	return c
}

func newExportFHIRCmd(e *env) *cobra.Command {
	var dir, convID, msgs, out string
	c := &cobra.Command{
		Use:   "fhir --dir DEV --conversation ID [--messages ID,...] --out FILE",
		Short: "File a conversation to the patient's record as a FHIR R4 Bundle",
		Long: strings.TrimSpace(`
Write the conversation ID, as the device in DEV holds it, as a FHIR R4
Bundle (type collection) of Communication resources — with the Practitioners
who sent and received each message and the Patient the conversation is
about — to FILE; --messages files only the messages named (comma-separated
IDs). Deleted messages are left out; edited ones carry their current text.
On an archive device (certificate role archive) it exports what the archive
filed instead: the latest version of each message, those deleted after
filing marked entered-in-error.

The device must be stopped: its store is opened with the device passphrase
(MEDMESH_PASSPHRASE or a prompt) and no network at all.

FILE holds patient data. It is written with mode 0600 (readable by its owner
only) and replaced atomically; keep it out of shared folders and delete it
once it is filed. Nothing about the patient or the messages is printed or
logged.`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := chat.ParseConversationID(convID)
			if err != nil {
				return fmt.Errorf("--conversation: not a conversation ID")
			}
			var sel []crdt.OpID
			if msgs != "" {
				for _, m := range strings.Split(msgs, ",") {
					var op crdt.OpID
					if err := op.UnmarshalText([]byte(strings.TrimSpace(m))); err != nil || op.IsZero() {
						return fmt.Errorf("--messages: %q is not a message ID", m)
					}
					sel = append(sel, op)
				}
			}
			pass, err := e.passphrase(envDevicePass, "device", false)
			if err != nil {
				return err
			}
			d, closeDev, err := openOffline(cmd.Context(), e, dir, pass)
			if err != nil {
				return err
			}
			defer closeDev()
			rec := &exportRecord{trail: d.Audit()}
			o := fhir.Options{Messages: sel, Now: e.time, Recorder: rec, Self: d.ID()}
			var data []byte
			if f := d.Filer(); f != nil { // an archive: what it filed
				data, err = exportFiled(f, d, id, o)
			} else {
				data, err = fhir.Export(d.Conversations(), d.Node(), id, o)
			}
			if err != nil {
				return fmt.Errorf("export conversation %s: %w", id, err)
			}
			if err := atomicfile.WriteFile(out, data, 0o600); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(e.stdout, "filed %d messages of conversation %s to %s (FHIR R4 bundle, mode 0600: it holds patient data)\n",
				len(rec.msgs), id, out)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "device directory (the device stopped)")
	f.StringVar(&convID, "conversation", "", "conversation ID")
	f.StringVar(&msgs, "messages", "", "only these message IDs (comma-separated)")
	f.StringVar(&out, "out", "", "file to write (mode 0600)")
	required(c, "dir", "conversation", "out")
	return c
}

// exportFiled exports what an archive device filed of conversation id,
// filing first what its store holds and was not filed yet.
func exportFiled(f *archive.Filer, d *device.Device, id chat.ConversationID, o fhir.Options) ([]byte, error) {
	if err := f.File(id); err != nil && !errors.Is(err, conversations.ErrNoConversation) {
		return nil, err
	}
	recs, err := f.Filed(id)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("nothing filed: %w", conversations.ErrNoConversation)
	}
	return fhir.FromFiled(id, recs, d.Node()).Export(o)
}

// exportRecord records the export in the device's audit trail (the
// "exported" event, conversation and message IDs) and keeps the count for
// the summary line; an error aborts the export.
type exportRecord struct {
	trail *device.Trail
	msgs  []crdt.OpID
}

func (r *exportRecord) RecordExport(conv chat.ConversationID, msgs []crdt.OpID) error {
	r.msgs = msgs
	return r.trail.RecordExport(conv, msgs)
}

// openOffline opens a stopped device's directory — keys, certificate
// chain, trust roots and store, under its passphrase — as device.Open
// does, but on a host of an empty in-memory network: it listens on no
// socket and meets nobody, so what it exports is what the directory holds.
func openOffline(ctx context.Context, e *env, dir string, pass []byte) (_ *device.Device, closeDev func(), err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	key, err := identity.LoadDeviceKey(dir, pass)
	if err != nil {
		return nil, nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, identity.DeviceCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: no %s in %s", device.ErrNoCertificate, identity.DeviceCertFile, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read device certificate: %w", err)
	}
	chain, err := identity.ParseCertificates(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("device certificate: %w", err)
	}
	trust, err := identity.LoadTrust(filepath.Join(dir, identity.TrustFile))
	if err != nil {
		return nil, nil, err
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(key.Identity)
	if err != nil {
		return nil, nil, fmt.Errorf("device key: %w", err)
	}
	mn := mocknet.New()
	h, err := mn.AddPeer(priv, ma.StringCast("/ip4/127.0.0.1/tcp/1"))
	if err != nil {
		mn.Close()
		return nil, nil, fmt.Errorf("offline host: %w", err)
	}
	opts := []device.Option{device.WithIdentity(key, chain, trust), device.WithHost(h), device.WithMDNS(false),
		device.WithLogger(slog.New(slog.DiscardHandler))}
	if e.kdf != nil {
		opts = append(opts, device.WithKDF(*e.kdf))
	}
	d, err := device.Open(ctx, dir, pass, opts...)
	if err != nil {
		mn.Close()
		return nil, nil, err
	}
	return d, func() { d.Close(); mn.Close() }, nil
}
