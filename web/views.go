package web

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/conversations"
)

// The JSON the API speaks (DESIGN.md, "Local API"). Field names are a
// contract other tools rely on.

// summaryView is a conversation in the list.
type summaryView struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Members []string `json:"members"`
	Admins  []string `json:"admins"`
	Last    string   `json:"last,omitempty"`
	Unread  int      `json:"unread"`
	Urgent  int      `json:"urgent"`
	Queued  int      `json:"queued"` // own messages still only on this device
	// Flags: members this device caught misbehaving (peer ID → reason).
	Flags map[string]string `json:"flags,omitempty"`
	// Patient: who the conversation is about; absent if nobody.
	Patient *patientView `json:"patient,omitempty"`
	// Role: the on-call role it was addressed to; absent if none.
	Role *roleLinkView `json:"role,omitempty"`
}

// patientView is a conversation's patient: nhs_number as ten digits
// (the app shows it 3-3-4), birth_date YYYY-MM-DD or absent, set_by the
// member who set or last corrected it.
type patientView struct {
	NHSNumber string `json:"nhs_number"`
	Name      string `json:"name"`
	BirthDate string `json:"birth_date,omitempty"`
	SetBy     string `json:"set_by"`
}

func summaryOf(c conversations.Summary) summaryView {
	v := summaryView{ID: c.ID.String(), Title: c.Title, Members: ids(c.Members), Admins: ids(c.Admins), Last: c.Last,
		Unread: c.Unread, Urgent: c.Urgent, Queued: c.Queued, Role: roleLinkOf(c.Role)}
	if p := c.Patient; p != nil {
		v.Patient = &patientView{NHSNumber: string(p.NHSNumber), Name: p.Name, BirthDate: p.BirthDate, SetBy: c.PatientBy.String()}
	}
	if len(c.Flags) > 0 {
		v.Flags = make(map[string]string, len(c.Flags))
		for p, why := range c.Flags {
			v.Flags[p.String()] = why
		}
	}
	return v
}

func ids(ps []peer.ID) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// messageView is a message as the API shows it.
type messageView struct {
	ID        string              `json:"id"`
	Sender    string              `json:"sender"`
	Text      string              `json:"text"`
	Time      time.Time           `json:"time"`
	Urgent    bool                `json:"urgent"`
	State     string              `json:"state"`
	Recipient map[string]string   `json:"recipients,omitempty"`
	ReplyTo   string              `json:"reply_to,omitempty"`
	Edited    bool                `json:"edited,omitempty"`
	Deleted   bool                `json:"deleted,omitempty"`
	Reactions map[string][]string `json:"reactions,omitempty"`
	Skewed    bool                `json:"clock_skewed,omitempty"`
	Photo     *photoView          `json:"photo,omitempty"`
	// Withdrawn: why a message this device showed no longer stands (its
	// text and photo are gone); empty for a standing message.
	Withdrawn string `json:"withdrawn,omitempty"`
	// Urgent messages (escalate.go): the acknowledgement wanted within
	// (seconds), by when (the current step's deadline), the escalation,
	// and for a message known only from an escalation's quote, who quoted.
	AckWithin  int64           `json:"ack_within,omitempty"`
	Deadline   *time.Time      `json:"deadline,omitempty"`
	Escalation *escalationView `json:"escalation,omitempty"`
	QuotedBy   string          `json:"quoted_by,omitempty"`
}

// photoView says a message is a photo; its bytes come from .../photo.
type photoView struct {
	Size  int64 `json:"size"`
	Ready bool  `json:"ready"` // every chunk has arrived
}

func messageOf(m conversations.Message) messageView {
	v := messageView{ID: m.ID.String(), Sender: m.Sender.String(), Text: m.Text, Time: m.Time, Urgent: m.Urgent,
		State: m.State, Edited: m.Edited, Deleted: m.Deleted, Skewed: m.Skewed, Withdrawn: m.Withdrawn}
	if !m.ReplyTo.IsZero() {
		v.ReplyTo = m.ReplyTo.String()
	}
	if m.Photo != nil {
		v.Photo = &photoView{Size: m.Photo.Size, Ready: m.Photo.Ready()}
	}
	if len(m.Reactions) > 0 {
		v.Reactions = map[string][]string{}
		for e, who := range m.Reactions {
			v.Reactions[e] = ids(who)
		}
	}
	escalationInto(&v, m)
	if m.PerRecipient != nil {
		v.Recipient = make(map[string]string, len(m.PerRecipient))
		for p, st := range m.PerRecipient {
			v.Recipient[p.String()] = st
		}
	}
	return v
}

// eventView is a change pushed on /api/v1/events.
type eventView struct {
	Type         string   `json:"type"` // conversation, message, state
	Conversation string   `json:"conversation"`
	Ops          []string `json:"ops,omitempty"` // the ops (messages, receipts…) it concerns
}

func eventOf(e conversations.Event) eventView {
	v := eventView{Type: e.Kind, Conversation: e.Conversation.String()}
	for _, id := range e.Ops {
		v.Ops = append(v.Ops, id.String())
	}
	return v
}
