package mesh

// Sync bytes written, by frame kind: what the simulator's cost breakdown
// reports (offers, reconciliation, wants, envelopes fetched, envelopes
// handed to carriers, hand and take frames, done).

// countSent adds a frame of n bytes to the per-kind counters.
func (s *Service) countSent(f *frame, n int) {
	k := int(f.Kind)
	if f.Kind == fEnvs && len(f.Tag) == 0 {
		k = 0 // envelopes handed to a carrier (no tag: the hand phase)
	}
	s.kindSent[k].Add(int64(n))
}

// SyncBytesByFrame reports the sync bytes this device has written, by
// frame kind.
func (s *Service) SyncBytesByFrame() map[string]int64 {
	names := [...]string{"hand-envelopes", "offer", "recon", "want", "envelopes", "done", "hand", "take"}
	out := make(map[string]int64, len(names))
	for i, n := range names {
		if v := s.kindSent[i].Load(); v > 0 {
			out[n] = v
		}
	}
	return out
}
