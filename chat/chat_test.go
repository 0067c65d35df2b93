package chat

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

func TestConversationBasics(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("Ward 7 handover", alice, bob, carol))
	ok := must[crdt.OpID](t)

	e1, m1 := ok(split(ra.Send("bed 4 needs review", SendOptions{})))
	w.now = w.now.Add(time.Minute)
	deliver(t, e1, rb, rc)
	e2, m2 := ok(split(rb.Send("on my way", SendOptions{ReplyTo: m1})))
	deliver(t, e2, ra, rc)
	st := rc.State()
	if st.Title != "Ward 7 handover" || len(st.Members) != 3 || !slices.Equal(texts(st), []string{"bed 4 needs review", "on my way"}) {
		t.Fatalf("carol sees %q %v %q", st.Title, st.Members, texts(st))
	}
	if st.Messages[1].ReplyTo != m1 || rc.ID() != ra.ID() {
		t.Fatal("reply or conversation ID lost")
	}
	// Edit, react, delete.
	e3, _ := ok(split(rb.Edit(m2, "on my way, 5 min")))
	e4, _ := ok(split(ra.React(m2, "👍")))
	e5, _ := ok(split(ra.Delete(m1)))
	all := slices.Concat(e3, e4, e5)
	deliver(t, all, ra, rb, rc)
	for _, r := range []*Replica{ra, rb, rc} {
		st := r.State()
		if !st.Messages[0].Deleted || st.Messages[0].Text != "" {
			t.Fatal("deleted message still has text")
		}
		if st.Messages[1].Text != "on my way, 5 min" || !st.Messages[1].Edited || len(st.Messages[1].Reactions["👍"]) != 1 {
			t.Fatalf("edit/react: %+v", st.Messages[1])
		}
	}
	// Only the author edits.
	if _, _, err := split(rc.Edit(m2, "hijack")); err == nil {
		t.Fatal("carol edited bob's message")
	}
	// Unreact.
	e6, _ := ok(split(ra.Unreact(m2, "👍")))
	deliver(t, e6, rb)
	if len(rb.State().Messages[1].Reactions) != 0 {
		t.Fatal("reaction not removed")
	}
}

func TestDeliveryStates(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("urgent", alice, bob, carol))
	ok := must[crdt.OpID](t)
	e, m := ok(split(ra.Send("crash call bay 3", SendOptions{Urgent: true})))
	state := func() string {
		d, err := ra.Delivery(m)
		if err != nil {
			t.Fatal(err)
		}
		return d.State
	}
	if state() != StateQueued {
		t.Fatalf("fresh message: %s", state())
	}
	ra.MarkHeld(m, "anchor")
	if state() != StateHeld {
		t.Fatalf("held: %s", state())
	}
	deliver(t, e, rb, rc)
	rcpt, _ := ok(split(rb.Receipt(Delivered, m)))
	deliver(t, rcpt, ra)
	if d, _ := ra.Delivery(m); d.State != StateHeld || d.PerRecipient[bob.ID] != StateDelivered {
		t.Fatalf("one delivered: %+v", d)
	}
	r2, _ := ok(split(rc.Receipt(Read, m)))
	r3, _ := ok(split(rb.Receipt(Acknowledged, m)))
	deliver(t, slices.Concat(r2, r3), ra)
	if d, _ := ra.Delivery(m); d.State != StateRead || d.PerRecipient[bob.ID] != StateAcknowledged {
		t.Fatalf("read/ack: %+v", d)
	}
	r4, _ := ok(split(rc.Receipt(Acknowledged, m)))
	r5, _ := ok(split(rc.Receipt(Delivered, m))) // never goes backwards
	deliver(t, slices.Concat(r4, r5), ra)
	if state() != StateAcknowledged {
		t.Fatalf("all acknowledged: %s", state())
	}
}

func TestRemovedMemberReadsNothingAfter(t *testing.T) {
	w := newWorld(t)
	alice, bob, mallory := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("team", alice, bob, mallory))
	ok := must[crdt.OpID](t)
	before, _ := ok(split(ra.Send("before", SendOptions{})))
	rem, _ := ok(split(ra.Remove(mallory.ID)))
	after, _ := ok(split(ra.Send("after removal", SendOptions{})))
	ctl, _ := ok(split(ra.Promote(bob.ID)))
	all := slices.Concat(before, rem, after, ctl)
	deliver(t, all, rb, rm) // mallory holds every envelope
	if got := texts(rm.State()); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("removed member reads %q", got)
	}
	// Nothing sent after the removal opened for mallory: neither content nor control.
	for id, info := range rm.ops {
		if _, afterRemoval := ra.ops[id].before.set[idOf(rem[0])]; afterRemoval && info.p != nil {
			t.Fatalf("mallory decrypted op %s (kind %d) sent after her removal", id, info.kind)
		}
	}
	if slices.Contains(rb.State().Members, mallory.ID) {
		t.Fatal("bob still lists mallory")
	}
	if _, _, err := split(rm.Send("still here?", SendOptions{})); !errors.Is(err, ErrNotMember) {
		t.Fatalf("removed member sent: %v", err)
	}
}

func TestPhotos(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	plain := mapPlain{}
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithPlaintexts(plain))
	deliver(t, envs, rb)
	image := make([]byte, MaxChunk*2+1000)
	for i := range image {
		image[i] = byte(i * 7)
	}
	out, id, err := split(ra.SendPhoto(image, []byte("thumb"), "rash on left forearm"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 4 {
		t.Fatalf("%d envelopes, want 3 chunks and the photo op", len(out))
	}
	slices.Reverse(out) // photo op first: it waits for its chunks
	deliver(t, out, rb)
	st := rb.State()
	if len(st.Messages) != 1 || st.Messages[0].Photo == nil || !st.Messages[0].Photo.Ready() || string(st.Messages[0].Photo.Thumb) != "thumb" {
		t.Fatalf("photo message: %+v", st.Messages)
	}
	got, err := rb.PhotoData(id)
	if err != nil || !bytes.Equal(got, image) {
		t.Fatalf("photo data: %d bytes, %v", len(got), err)
	}
	if _, _, err := split(ra.SendPhoto(make([]byte, MaxPhoto+1), nil, "")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized photo: %v", err)
	}
	del, _, err := split(ra.Delete(id))
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, del, rb)
	if _, err := rb.PhotoData(id); err == nil {
		t.Fatal("deleted photo still readable")
	}
	for _, p := range plain {
		if bytes.Contains(p, image[:64]) {
			t.Fatal("deleted photo's bytes kept in the plaintext store")
		}
	}
}
