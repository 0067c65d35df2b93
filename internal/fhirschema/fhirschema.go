// Package fhirschema validates JSON against the official FHIR R4 JSON
// schema (fhir/testdata/fhir.schema.json) with a real JSON-schema
// validator. Only tests import it.
package fhirschema

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaURL is the schema's own id.
const SchemaURL = "http://hl7.org/fhir/json-schema/4.0"

var (
	once   sync.Once
	schema *jsonschema.Schema
	err    error
)

// Path is the checked-in schema's path.
func Path() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "fhir", "testdata", "fhir.schema.json")
}

func load() (*jsonschema.Schema, error) {
	once.Do(func() {
		var raw []byte
		if raw, err = os.ReadFile(Path()); err != nil {
			return
		}
		var doc any
		if doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(raw)); err != nil {
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft6)
		if err = c.AddResource(SchemaURL, doc); err != nil {
			return
		}
		schema, err = c.Compile(SchemaURL)
	})
	return schema, err
}

// Validate checks data (one FHIR resource as JSON) against the schema.
func Validate(data []byte) error {
	s, err := load()
	if err != nil {
		return fmt.Errorf("load FHIR schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("parse JSON: %w", err)
	}
	return s.Validate(v)
}
