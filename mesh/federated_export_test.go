package mesh

// CheckEnvelope runs the checks gossip (viaSync false) or a fetch (true)
// applies to an envelope, for tests of federated senders.
func (s *Service) CheckEnvelope(raw []byte, viaSync bool) error {
	_, err := s.check(raw, viaSync)
	return err
}
