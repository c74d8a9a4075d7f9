// Package schemafp computes the schema fingerprints that the proxy compares
// between the registry and each node's schema cache (AGENT-NODE.md §7).
//
// It works on the encoded bytes of a schema message (Group, IndexRule,
// Stream, Measure, Trace, ...), as the node sent them: field 1, the
// metadata, is re-emitted without its identity fields id (3),
// create_revision (4) and mod_revision (5); every other field is copied
// as is. The base hash is XXH64 of the result; a fingerprint hashes the
// subject's base hash and its bound rules' base hashes, the rules ordered
// by group/name, as 8-byte little-endian words.
package schemafp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// Metadata is the part of common.v1.Metadata the agent reads.
type Metadata struct {
	Group string
	Name  string
}

// Base returns the base hash of one encoded schema message.
func Base(msg []byte) (uint64, error) {
	b, err := Normalize(msg)
	if err != nil {
		return 0, err
	}
	return xxhash.Sum64(b), nil
}

// Normalize returns msg with the identity fields of its metadata removed.
func Normalize(msg []byte) ([]byte, error) {
	out := make([]byte, 0, len(msg))
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, field []byte, tagLen int) error {
		if num != 1 || typ != protowire.BytesType {
			out = append(out, field...)
			return nil
		}
		md, _ := protowire.ConsumeBytes(field[tagLen:])
		stripped, err := dropFields(md, 3, 4, 5)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, stripped)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// dropFields copies msg without the fields numbered drop.
func dropFields(msg []byte, drop ...protowire.Number) ([]byte, error) {
	out := make([]byte, 0, len(msg))
	err := eachField(msg, func(num protowire.Number, _ protowire.Type, field []byte, _ int) error {
		if !slices.Contains(drop, num) {
			out = append(out, field...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachField calls fn with every top-level field of msg in order: its
// number, wire type, encoded bytes (tag and value) and the tag's length.
// It stops at the first malformed field or the first error fn returns.
func eachField(msg []byte, fn func(num protowire.Number, typ protowire.Type, field []byte, tagLen int) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if err := fn(num, typ, msg[:n+m], n); err != nil {
			return err
		}
		msg = msg[n+m:]
	}
	return nil
}

// Fields returns the last value of each length-delimited field of msg
// whose number is in want, and every varint field too (keyed the same).
// It is the small reader the agent needs for names, catalogs and subjects.
type Fields struct {
	Bytes    map[protowire.Number][]byte
	Repeated map[protowire.Number][][]byte
	Varints  map[protowire.Number]uint64
}

// Parse reads the top-level fields of msg.
func Parse(msg []byte) (Fields, error) {
	f := Fields{Bytes: map[protowire.Number][]byte{}, Repeated: map[protowire.Number][][]byte{}, Varints: map[protowire.Number]uint64{}}
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, field []byte, tagLen int) error {
		switch typ {
		case protowire.BytesType:
			v, _ := protowire.ConsumeBytes(field[tagLen:])
			f.Bytes[num] = v
			f.Repeated[num] = append(f.Repeated[num], v)
		case protowire.VarintType:
			v, _ := protowire.ConsumeVarint(field[tagLen:])
			f.Varints[num] = v
		}
		return nil
	})
	return f, err
}

// MetadataOf reads metadata (field 1) of a schema message.
func MetadataOf(msg []byte) (Metadata, error) {
	f, err := Parse(msg)
	if err != nil {
		return Metadata{}, err
	}
	md, ok := f.Bytes[1]
	if !ok {
		return Metadata{}, errors.New("no metadata")
	}
	mf, err := Parse(md)
	if err != nil {
		return Metadata{}, fmt.Errorf("metadata: %w", err)
	}
	return Metadata{Group: string(mf.Bytes[1]), Name: string(mf.Bytes[2])}, nil
}

// Fingerprint returns the fingerprint of subject with its bound rules.
func Fingerprint(subject []byte, rules [][]byte) (uint64, error) {
	sh, err := Base(subject)
	if err != nil {
		return 0, err
	}
	type keyed struct {
		key  string
		hash uint64
	}
	var ks []keyed
	seen := make(map[string]bool, len(rules))
	for _, r := range rules {
		md, err := MetadataOf(r)
		if err != nil {
			return 0, fmt.Errorf("rule: %w", err)
		}
		key := md.Group + "/" + md.Name
		if seen[key] {
			continue
		}
		seen[key] = true
		h, err := Base(r)
		if err != nil {
			return 0, fmt.Errorf("rule %s: %w", key, err)
		}
		ks = append(ks, keyed{key, h})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	buf := make([]byte, 0, 8*(1+len(ks)))
	buf = binary.LittleEndian.AppendUint64(buf, sh)
	for _, k := range ks {
		buf = binary.LittleEndian.AppendUint64(buf, k.hash)
	}
	return xxhash.Sum64(buf), nil
}
