// Package store keeps a device's data encrypted at rest, as a go-datastore
// Batching wrapper over any Batching backend (embedded default: pebble).
//
// Values are sealed with XChaCha20-Poly1305 under a random data key, with the
// stored key name as associated data, so a value cannot be moved to another
// key. Key names are keyed hashes, chained per path component, so prefix
// queries on component boundaries still work but no name reveals content;
// the original key travels inside the sealed value. The data key is wrapped
// (argon2id from the device passphrase) in its own small file beside the data
// — not inside the LSM tree, which keeps old values until compaction — and
// Wipe overwrites, fsyncs and unlinks that file, so the data can never be read
// again.
//
// Deletion is real on the embedded pebble: a deleted value (Delete, or a
// Delete in a committed Batch) is in no file under the store directory
// once the next purge has run — at most PurgeDelay (default 10 s) after
// the delete, at Close, or when Purge is called. A purge flushes the
// memtable (a fresh write-ahead log), compacts the range from the least
// to the greatest deleted name to the bottom level (where a delete and
// the values it shadows are dropped) and waits until the obsolete files
// are gone. Every file pebble discards is overwritten with random bytes
// and fsynced before it is unlinked, and write-ahead logs are never
// recycled (a recycled log keeps the old log's bytes beyond its new
// records). A Put alone does not purge the value it replaces: a caller
// overwriting a secret deletes it first, in the same batch. Purges run
// at most once per PurgeDelay; one costs about a compaction of the
// deleted range — 50 ms for one delete in 20 MiB, 0.15 s in 100 MiB, 0.9 s
// for 100 deletes spread over 100 MiB (BenchmarkPurge). Over a backend
// given with WithBackend deletion is that backend's business.
//
// Writes are not fsynced one by one: a Batch commit is one fsync (group
// commit). Store is safe for concurrent use as far as its backend is. A
// store over the embedded pebble owns one goroutine, the purger, stopped
// by Close and Wipe.
package store
