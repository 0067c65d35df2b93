package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/testnet"
)

// TestAttackCommand: `medmesh attack` runs the harness against a node on
// loopback and reports each bound held; it refuses any other target.
func TestAttackCommand(t *testing.T) {
	ca := testnet.NewCA(t)
	victim := testnet.Start(t, ca, ca.Enrol(t, "victim"))
	target := victim.N.Host().Addrs()[0].String() + "/p2p/" + victim.ID.String()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"attack", "--target", target, "--only", "oversized-frame,garbage,harvest"}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("attack: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, name := range []string{"oversized-frame", "garbage", "harvest"} {
		if !strings.Contains(out.String(), name+"  ") || strings.Contains(out.String(), "FAILED") {
			t.Fatalf("report lacks %s held:\n%s", name, out.String())
		}
	}
	remote := "/ip4/192.0.2.7/tcp/4001/p2p/" + victim.ID.String()
	if err := run(context.Background(), []string{"attack", "--target", remote}, nil, &out, &errOut); err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Fatalf("a non-loopback target: %v", err)
	}
}
