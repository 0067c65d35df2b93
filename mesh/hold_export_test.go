package mesh

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// HoldSync makes this device answer no sync stream until release is
// called: a benchmark starts and admits devices first, then releases the
// sync it measures. A held stream is reset if the service closes first.
func (s *Service) HoldSync() (release func()) {
	ch := make(chan struct{})
	h := s.gate(s.handleSync)
	s.cfg.Node.Host().SetStreamHandler(ProtoSync, func(st network.Stream) {
		select {
		case <-ch:
			h(st)
		case <-s.ctx.Done():
			st.Reset()
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}
