// Package mobile is the facade a phone app binds with gomobile: it runs a
// whole medmesh device (device.Open) inside the app process and serves its
// web app on loopback, exposing only plain types (string, error, *Device)
// so that gobind can generate Java/Kotlin and Objective-C/Swift bindings.
// The app shows the web app in a WebView pointed at URL(); the user
// unlocks it with the device passphrase, as in a browser.
//
// Keep this API to types gobind binds (string, bool, signed ints, floats,
// []byte, error, pointers to exported structs); .ci/crossbuild fails if
// gobind has to drop anything.
package mobile

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/web"
)

// stopGrace is how long Stop lets requests in flight finish.
const stopGrace = 5 * time.Second

// Device is a running medmesh device embedded in the app.
type Device struct {
	d    *device.Device
	app  *web.App
	once sync.Once
}

// Start opens the device directory dir (made by `medmesh init`, holding
// the signed device.crt) with the passphrase, starts the device — LAN
// discovery on — and serves its web app on a loopback port; the app's
// address is then URL().
func Start(dir, passphrase string) (*Device, error) { return start(dir, passphrase, true) }

// start is Start with LAN discovery on or off: tests run on loopback only,
// with no multicast on the machine's interfaces.
func start(dir, passphrase string, lan bool) (*Device, error) {
	pass := []byte(passphrase)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []device.Option{device.WithMDNS(lan), device.WithLogger(log)}
	if !lan {
		opts = append(opts, device.WithListen("/ip4/127.0.0.1/tcp/0"))
	}
	d, err := device.Open(context.Background(), dir, pass, opts...)
	if err != nil {
		return nil, fmt.Errorf("start device in %s: %w", filepath.Base(dir), err)
	}
	unlock := func(p []byte) bool { _, err := identity.LoadDeviceKey(dir, p); return err == nil }
	app, err := web.Serve(d, "127.0.0.1:0", unlock, web.DefaultLockAfter, log)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &Device{d: d, app: app}, nil
}

// URL is the address of the device's web app (for the app's WebView).
func (d *Device) URL() string { return d.app.URL() }

// PeerID is the device's libp2p peer ID.
func (d *Device) PeerID() string { return d.d.ID().String() }

// Stop stops the web app and the device; safe to call twice.
func (d *Device) Stop() error {
	var err error
	d.once.Do(func() {
		d.app.Close(stopGrace)
		err = d.d.Close()
	})
	return err
}
