package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/demo/synth"
)

// nodeDirs are the per-node directories the demo's agents read and write,
// like the volumes a BanyanDB pod shares with its agent.
type nodeDirs struct {
	lifecycle, crash, pressure string
}

func makeNodeDirs(root, pod string) (nodeDirs, error) {
	d := nodeDirs{
		lifecycle: filepath.Join(root, pod, "lifecycle-reports"),
		crash:     filepath.Join(root, pod, "panic-artifacts"),
		pressure:  filepath.Join(root, pod, "pressure-profiles"),
	}
	for _, dir := range []string{d.lifecycle, d.crash, d.pressure} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return d, err
		}
	}
	return d, nil
}

// writeLifecycleReports writes two migration reports of the lifecycle
// sidecar into dir: yesterday's, finished, and today's, half way with one
// failed part.
func writeLifecycleReports(dir, pod string, now time.Time) error {
	for i, day := range []time.Time{now.AddDate(0, 0, -1), now} {
		done := i == 0
		completed, failed := 10, 0
		rate := 100
		if !done {
			completed, failed, rate = 5, 1, 50
		}
		errs := map[string][]map[string]any{"measure_parts": {}, "measure_series": {}, "stream_parts": {}, "stream_series": {}}
		if failed > 0 {
			errs["measure_parts"] = []map[string]any{{
				"source_stage": "hot", "target_stage": "warm", "group": synth.Groups[0], "catalog": "measure",
				"scope": "part", "shard": 0, "part": 7, "error": "demo: target node " + pod + " refused the part",
			}}
		}
		report := map[string]any{
			"report_version": "2.1",
			"generated_at":   day.UTC().Format(time.RFC3339Nano),
			"errors":         errs,
			"orphans":        map[string]any{"policy": "archive"},
			"summary": map[string]any{
				"migration_status": map[string]any{"completed_groups": completed / 5, "total_groups": 2, "completion_rate": rate},
				"measure_migration": map[string]any{
					"parts": map[string]any{"completed": completed, "errors": failed, "total": 10, "completion_rate": rate},
				},
			},
		}
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		name := day.UTC().Format("20060102_150405") + ".json"
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// writeCrashArtifact writes one recovered panic into the artifact root dir
// the way banyand does: a directory per panic, its state dump first and
// panic.json last.
func writeCrashArtifact(dir, pod string, at time.Time) error {
	name := at.UTC().Format("20060102T150405.000000000Z") + "-demo-flush-panic"
	art := filepath.Join(dir, name)
	if err := os.MkdirAll(art, 0o750); err != nil {
		return err
	}
	meta := map[string]string{"artifactDir": dir, "component": "measure/flush", "nodeType": "data", "pod": pod}
	dump, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(art, "deep-dump.json"), dump, 0o600); err != nil {
		return err
	}
	rec := map[string]any{
		"processMetadata": meta,
		"component":       "measure/flush",
		"panicValue":      "demo: index out of range [3] with length 3",
		"goroutineStack":  "goroutine 7 [running]:\nmain.flushPart(...)\n\t/demo/measure/flush.go:42 +0x1d\ncreated by main.startFlusher in goroutine 1\n\t/demo/measure/flush.go:17 +0x5a\n",
		"occurredAt":      at.UTC().Format(time.RFC3339Nano),
		"breadcrumbs": []map[string]any{{
			"stage": "flush started", "component": "measure/flush", "time": at.Add(-time.Millisecond).UTC().Format(time.RFC3339Nano),
			"fields": map[string]string{"group": synth.Groups[0]},
		}},
		"recovered": true,
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(art, "panic.json"), b, 0o600)
}

// lifecycleServer answers InspectAll for the liaison's internal port with
// the demo's groups.
type lifecycleServer struct {
	fodcv1.UnimplementedGroupLifecycleServiceServer
}

func (lifecycleServer) InspectAll(context.Context, *fodcv1.InspectAllRequest) (*fodcv1.InspectAllResponse, error) {
	day := func(n uint32) *commonv1.IntervalRule {
		return &commonv1.IntervalRule{Unit: commonv1.IntervalRule_UNIT_DAY, Num: n}
	}
	catalogs := []string{"CATALOG_MEASURE", "CATALOG_STREAM", "CATALOG_TRACE"}
	resp := &fodcv1.InspectAllResponse{}
	for i, g := range synth.Groups {
		resp.Groups = append(resp.Groups, &fodcv1.GroupLifecycleInfo{
			Name:    g,
			Catalog: catalogs[i%len(catalogs)],
			ResourceOpts: &commonv1.ResourceOpts{
				ShardNum: 2, Replicas: 1, SegmentInterval: day(1), Ttl: day(3),
				Stages: []*commonv1.LifecycleStage{{
					Name: "warm", ShardNum: 1, SegmentInterval: day(3), Ttl: day(7), NodeSelector: "type=warm",
				}},
				DefaultStages: []string{"warm"},
			},
			Errors: []string{},
		})
	}
	return resp, nil
}

func newLifecycleGRPC() *grpc.Server {
	s := grpc.NewServer()
	fodcv1.RegisterGroupLifecycleServiceServer(s, lifecycleServer{})
	return s
}

// errPrefix names a demo node's file that could not be written.
func errPrefix(pod, what string, err error) error {
	return fmt.Errorf("demo node %s: %s: %w", pod, what, err)
}
