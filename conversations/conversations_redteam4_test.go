package conversations

// Red-team round 4: joins on welcome.

import (
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/mesh"
)

// TestRedteam4GhostWelcomesLockOutHonestJoins: attack — one admitted but
// malicious colleague (mallory) seals the victim into conversations whose
// history never comes ("ghost" welcomes: one signature and one HPKE seal
// each). The per-sender bound lets it place MaxJoinsPerSender an hour, so
// within two hours it fills the device-wide MaxUnopened bound. Nothing ever
// takes a conversation that never opens off that count, so from then on
// the victim refuses every welcome from every colleague, however long it
// waits ("deferred" welcomes handed over again by sync are refused too).
// Impact: a single insider silently and permanently (until restart) stops
// a clinician from being added to any new conversation — a targeted
// denial of service of the ward's messaging for that person.
func TestRedteam4GhostWelcomesLockOutHonestJoins(t *testing.T) {
	victim, mallory, alice := rtNewDev(t), rtNewDev(t), rtNewDev(t)
	dir := rtDir{victim.id: victim, mallory.id: mallory, alice.id: alice}
	now := time.Unix(1_700_000_000, 0)
	s, err := Open(Config{Device: victim.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ghosts := 0
	for attempt := 0; ghosts < MaxUnopened && attempt < 4*MaxUnopened; attempt++ {
		w := rtSealedGhost(t, mallory, victim)
		if s.Deliver(w.Env.Tag, []mesh.Checked{w}, mallory.id) {
			ghosts++
			continue
		}
		now = now.Add(JoinWindow) // mallory waits out its window
	}
	if ghosts > MaxUnopenedPerSender {
		t.Errorf("one colleague placed %d conversations that never open (bound %d per sender)", ghosts, MaxUnopenedPerSender)
	}
	// An honest colleague's real conversation, handed over again and
	// again by sync over the following days.
	tag, envs := rtConversation(t, alice, dir, victim.id)
	for day := range 3 {
		if s.Deliver(tag, envs, alice.id) {
			return
		}
		now = now.Add(24 * time.Hour)
		t.Logf("day %d: alice's welcome refused", day)
	}
	t.Fatalf("after one colleague's %d ghost welcomes (within %s), an honest colleague's conversation is never joined",
		MaxUnopened, time.Duration(MaxUnopened/MaxJoinsPerSender-1)*JoinWindow)
}
