package chat

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type world struct {
	t       testing.TB
	now     time.Time
	devices map[peer.ID]*Device
	names   map[peer.ID]string
}

func newWorld(t testing.TB) *world {
	return &world{t: t, now: t0, devices: map[peer.ID]*Device{}, names: map[peer.ID]string{}}
}

func (w *world) clock() time.Time { return w.now }

func (w *world) device(name string) *Device {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := crypto.UnmarshalEd25519PublicKey(k.Public().(ed25519.PublicKey))
	id, _ := peer.IDFromPublicKey(pk)
	d := &Device{Key: k, ID: id, Prekeys: e2e.NewPrekeyRing(k, id)}
	w.devices[id] = d
	w.names[id] = name
	return d
}

// Recipient implements Directory from the devices' own prekey rings, as the
// directory entries spread by the mesh would.
func (w *world) Recipient(id peer.ID, now time.Time) (e2e.Recipient, error) {
	d := w.devices[id]
	if d == nil {
		return e2e.Recipient{}, fmt.Errorf("unknown device %s", id)
	}
	p, err := d.Prekeys.Current(now)
	if err != nil {
		return e2e.Recipient{}, err
	}
	if err := p.Verify(); err != nil {
		return e2e.Recipient{}, err
	}
	return e2e.Recipient{ID: id, PrekeyID: p.ID, KEM: p.KEM}, nil
}

func (w *world) create(creator *Device, title string, members ...*Device) (*Replica, [][]byte) {
	w.t.Helper()
	var ids []peer.ID
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	r, out, err := splitCreate(Create(creator, w, title, ids, WithClock(w.clock)))
	if err != nil {
		w.t.Fatal(err)
	}
	return r, out
}

func (w *world) join(d *Device, tag []byte) *Replica { return Join(d, w, tag, WithClock(w.clock)) }

// deliver hands envelopes to replicas, ignoring duplicates and expected
// authorisation failures (they are checked separately).
func deliver(t testing.TB, envs [][]byte, to ...*Replica) {
	t.Helper()
	for _, r := range to {
		for _, e := range envs {
			if err := r.Receive(e); err != nil && !benign(err) {
				t.Fatalf("deliver: %v", err)
			}
		}
	}
}

func must[T any](t testing.TB) func(envs [][]byte, id T, err error) ([][]byte, T) {
	return func(envs [][]byte, id T, err error) ([][]byte, T) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return envs, id
	}
}

func texts(st *State) []string {
	var out []string
	for _, m := range st.Messages {
		out = append(out, m.Text)
	}
	return out
}

func idOf(raw []byte) crdt.OpID { return crdt.OpID(e2e.ID(raw)) }

func reflectEqual(a, b any) bool { return reflect.DeepEqual(a, b) }

func (w *world) devicesExcept(d *Device) []*Device {
	var out []*Device
	for id, x := range w.devices {
		if id != d.ID {
			out = append(out, x)
		}
	}
	return out
}

// group starts a conversation with title created by the first device, with
// the others as members, and brings every member's replica in step.
func (w *world) group(title string, devs ...*Device) []*Replica {
	w.t.Helper()
	first, envs := w.create(devs[0], title, devs[1:]...)
	out := []*Replica{first}
	for _, d := range devs[1:] {
		r := w.join(d, first.Tag())
		deliver(w.t, envs, r)
		out = append(out, r)
	}
	return out
}

func unpack2(r []*Replica) (*Replica, *Replica)           { return r[0], r[1] }
func unpack3(r []*Replica) (*Replica, *Replica, *Replica) { return r[0], r[1], r[2] }
func unpack4(r []*Replica) (*Replica, *Replica, *Replica, *Replica) {
	return r[0], r[1], r[2], r[3]
}

// split gives what a command produced as the envelopes, the op and the
// error, the shape most tests take.
func split(o Out, err error) ([][]byte, crdt.OpID, error) { return o.Envelopes, o.ID, err }

// splitCreate is split for Create.
func splitCreate(r *Replica, o Out, err error) (*Replica, [][]byte, error) {
	return r, o.Envelopes, err
}

// forgedContent is a content op by d in r's first epoch, after deps, at
// chain index i, with a body of size bytes no member can open: what any
// admitted device can make for a tag it has seen offered.
func forgedContent(t *testing.T, w *world, r *Replica, d *Device, deps []crdt.OpID, i uint32, size int) []byte {
	t.Helper()
	dd := make([][32]byte, len(deps))
	for j := range deps {
		dd[j] = deps[j]
	}
	env := e2e.New(r.Tag(), d.ID, dd)
	env.Wall = w.now.UnixMilli()
	ep := e2e.EpochID(r.firstRoot())
	env.Kind, env.Epoch, env.Index, env.Body = e2e.KindContent, ep[:], i, make([]byte, size)
	if err := env.Sign(d.Key); err != nil {
		t.Fatal(err)
	}
	b, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
