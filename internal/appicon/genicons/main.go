// Command genicons writes the web app's icons (icon-192.png, icon-512.png)
// into a directory: go generate ./web runs it for web/app.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/medmesh/medmesh/internal/appicon"
)

func main() {
	out := flag.String("out", ".", "directory to write the icons to")
	flag.Parse()
	for _, size := range appicon.Sizes {
		b, err := appicon.PNG(size)
		if err != nil {
			log.Fatalf("icon %d: %v", size, err)
		}
		name := filepath.Join(*out, fmt.Sprintf("icon-%d.png", size))
		if err := os.WriteFile(name, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
