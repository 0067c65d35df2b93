package simulations

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Summary holds the headline metrics of a run.
type Summary struct {
	Scenario         string  `json:"scenario"`
	Seed             uint64  `json:"seed"`
	Engine           string  `json:"engine"`
	Deliveries       int     `json:"deliveries_expected"`
	Delivered        int     `json:"delivered"`
	DeliveryRatio    float64 `json:"delivery_ratio"`
	NoPath           int     `json:"undelivered_no_path"`
	Missed           int     `json:"undelivered_path_existed"`
	LatencyMean      float64 `json:"latency_mean_s"`
	LatencyMedian    float64 `json:"latency_median_s"`
	LatencyP95       float64 `json:"latency_p95_s"`
	LatencyP99       float64 `json:"latency_p99_s"`
	LatencyVsOracle  float64 `json:"latency_ratio_to_oracle_median"`
	OverheadRatio    float64 `json:"overhead_ratio"`
	HopsMean         float64 `json:"hop_count_mean"`
	BytesPerDelivery float64 `json:"bytes_per_delivered_message"`
	EnvelopeBytes    int64   `json:"envelope_bytes"` // envelopes on the wire, every transfer counted (DES)
	StoragePerNode   float64 `json:"storage_per_node_bytes"`
	Relayed          int     `json:"relayed"`
	Duplicates       int     `json:"duplicates"`
	ReconMessages    int     `json:"reconciliation_messages"`
	Events           int     `json:"events"`
	// With a partition: seconds after the last heal until every member
	// held every op of its conversation written before it (-1: never).
	ConvergenceS *float64 `json:"convergence_after_heal_s,omitempty"`
	// With revocations (all of them together).
	RevocationLearntMedianS *float64 `json:"revocation_learnt_median_s,omitempty"`
	RevocationLearntMaxS    *float64 `json:"revocation_learnt_max_s,omitempty"`
	RevocationNotLearnt     *int     `json:"revocation_not_learnt,omitempty"`
	RevokedSent             *int     `json:"revoked_messages_sent,omitempty"`
	RevokedShown            *int     `json:"revoked_messages_shown_before_crl,omitempty"`
	RevokedStanding         *int     `json:"revoked_messages_standing,omitempty"`
	// With carriage (routing medmesh-carry): the devices that carried
	// anything, the most one held at once, and the envelope bytes a
	// carrier sent plus received for carriage per hour of the run (mean
	// over carriers, and the most).
	// Full engine with bridges on site links: how often a bridge's link
	// went down, the bytes the bridges sent on them, and the conversation
	// gossip messages one bridge sent another (0: none crossed).
	SiteLinkDowns           *int      `json:"site_link_downs,omitempty"`
	SiteBytes               *int64    `json:"site_link_bytes,omitempty"`
	WANGossip               *int64    `json:"site_link_gossip_messages,omitempty"`
	Carriers                *int      `json:"carriers,omitempty"`
	CarrierPeakBytes        *int64    `json:"carrier_peak_bytes,omitempty"`
	CarrierBytesPerHourMean *float64  `json:"carrier_bytes_per_hour_mean,omitempty"`
	CarrierBytesPerHourMax  *float64  `json:"carrier_bytes_per_hour_max,omitempty"`
	TimeScale               float64   `json:"time_scale,omitempty"`
	LagS                    float64   `json:"lag_s,omitempty"`
	LagByPartS              []float64 `json:"lag_by_twelfth_s,omitempty"`
	Failures                int       `json:"failures,omitempty"`

	// Full engine: the parts of Bytes by sync frame kind, and gossip.
	BytesByFrame map[string]int64 `json:"bytes_by_frame,omitempty"`
}

// Summarise computes the metrics of a result.
func Summarise(r *Result) Summary {
	s := Summary{Scenario: r.World.S.Name, Seed: r.World.Seed, Engine: r.Engine, Deliveries: len(r.Messages), ReconMessages: r.ReconMsgs,
		Events: r.Events, Relayed: r.Relayed, Duplicates: r.Duplicates, TimeScale: r.TimeScale, LagS: r.Lag, LagByPartS: r.LagBy, Failures: len(r.Failures)}
	var lat, ratio []float64
	hops := 0
	for _, m := range r.Messages {
		switch {
		case m.Delivered >= 0:
			s.Delivered++
			lat = append(lat, m.Delivered-m.Sent)
			hops += m.Hops
			if o := m.Oracle - m.Sent; o > 0 {
				ratio = append(ratio, (m.Delivered-m.Sent)/o)
			} else {
				ratio = append(ratio, 1)
			}
		case m.Oracle < 0:
			s.NoPath++
		default:
			s.Missed++
		}
	}
	if s.Deliveries > 0 {
		s.DeliveryRatio = float64(s.Delivered) / float64(s.Deliveries)
	}
	if s.Delivered > 0 {
		sort.Float64s(lat)
		sort.Float64s(ratio)
		sum := 0.0
		for _, l := range lat {
			sum += l
		}
		s.LatencyMean = sum / float64(len(lat))
		s.LatencyMedian, s.LatencyP95, s.LatencyP99 = pct(lat, .5), pct(lat, .95), pct(lat, .99)
		s.LatencyVsOracle = pct(ratio, .5)
		s.HopsMean = float64(hops) / float64(s.Delivered)
		s.OverheadRatio = float64(r.Relayed-s.Delivered) / float64(s.Delivered)
		s.BytesPerDelivery = float64(r.Bytes) / float64(s.Delivered)
	}
	if r.SiteBytes != nil {
		downs, bytes, gossip := 0, int64(0), r.WANGossip
		for _, c := range r.SiteLinks {
			if !c.Up {
				downs++
			}
		}
		for _, n := range r.SiteBytes {
			bytes += n
		}
		s.SiteLinkDowns, s.SiteBytes, s.WANGossip = &downs, &bytes, &gossip
	}
	if r.Convergence != nil {
		conv := 0.0
		for _, c := range r.Convergence {
			if c < 0 {
				conv = -1
				break
			}
			conv = max(conv, c)
		}
		s.ConvergenceS = &conv
	}
	if len(r.Revocations) > 0 {
		var learnt []float64
		notLearnt, sent, shown, standing := 0, 0, 0, 0
		for _, rv := range r.Revocations {
			for _, l := range rv.Learnt {
				if l < 0 {
					notLearnt++
				} else {
					learnt = append(learnt, l)
				}
			}
			sent, shown, standing = sent+rv.Sent, shown+rv.Shown, standing+rv.Standing
		}
		sort.Float64s(learnt)
		med, mx := pct(learnt, .5), 0.0
		if len(learnt) > 0 {
			mx = learnt[len(learnt)-1]
		}
		s.RevocationLearntMedianS, s.RevocationLearntMaxS, s.RevocationNotLearnt = &med, &mx, &notLearnt
		s.RevokedSent, s.RevokedShown, s.RevokedStanding = &sent, &shown, &standing
	}
	s.EnvelopeBytes = r.EnvelopeBytes
	s.BytesByFrame = r.SyncByFrame
	if r.Carriage != nil {
		n, peak, sum, most := 0, int64(0), 0.0, 0.0
		hours := r.World.S.Hours
		for _, c := range r.Carriage {
			if c.PeakBytes == 0 && c.Sent == 0 {
				continue
			}
			n++
			peak = max(peak, c.PeakBytes)
			h := float64(c.Sent+c.Received) / hours
			sum += h
			most = max(most, h)
		}
		mean := 0.0
		if n > 0 {
			mean = sum / float64(n)
		}
		s.Carriers, s.CarrierPeakBytes, s.CarrierBytesPerHourMean, s.CarrierBytesPerHourMax = &n, &peak, &mean, &most
	}
	var st int64
	for _, b := range r.Storage {
		st += b
	}
	if len(r.Storage) > 0 {
		s.StoragePerNode = float64(st) / float64(len(r.Storage))
	}
	return s
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(math.Floor(p*float64(len(sorted)))))]
}

func f(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// Write puts summary.csv, messages.csv, summary.json and the plots in dir.
func Write(dir string, r *Result, s Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var m map[string]any
	json.Unmarshal(js, &m)
	for k, v := range m { // bytes_by_frame: a row per frame kind; lag_by_twelfth_s: a row per part (01–12)
		switch sub := v.(type) {
		case map[string]any:
			delete(m, k)
			for kk, vv := range sub {
				if n, ok := vv.(float64); ok {
					vv = int64(n)
				}
				m[k+"."+kk] = vv
			}
		case []any:
			delete(m, k)
			for i, vv := range sub {
				m[fmt.Sprintf("%s.%02d", k, i+1)] = vv
			}
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rows := [][]string{{"metric", "value"}}
	for _, k := range keys {
		rows = append(rows, []string{k, fmt.Sprint(m[k])})
	}
	if err := writeCSV(filepath.Join(dir, "summary.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"message", "from", "to", "sent_s", "delivered_s", "latency_s", "oracle_s", "latency_ratio_to_oracle", "hops", "outcome"}}
	for _, msg := range r.Messages {
		outcome, del, latS, orc, ratio := "delivered", f(msg.Delivered), f(msg.Delivered-msg.Sent), f(msg.Oracle), ""
		if msg.Oracle >= 0 && msg.Oracle > msg.Sent && msg.Delivered >= 0 {
			ratio = f((msg.Delivered - msg.Sent) / (msg.Oracle - msg.Sent))
		}
		switch {
		case msg.Delivered < 0 && msg.Oracle < 0:
			outcome, del, latS, orc = "no-path", "", "", ""
		case msg.Delivered < 0:
			outcome, del, latS = "path-existed-but-missed", "", ""
		}
		rows = append(rows, []string{strconv.Itoa(msg.ID), msg.From, msg.To, f(msg.Sent), del, latS, orc, ratio, strconv.Itoa(msg.Hops), outcome})
	}
	if err := writeCSV(filepath.Join(dir, "messages.csv"), rows); err != nil {
		return err
	}
	return plots(dir, r)
}

func writeCSV(path string, rows [][]string) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(fh)
	w.WriteAll(rows)
	if err := w.Error(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// plots draws the latency CDF beside the oracle's, deliveries over time
// and, after a partition, convergence.
func plots(dir string, r *Result) error {
	var del, orc, at []float64
	for _, m := range r.Messages {
		if m.Delivered >= 0 {
			del = append(del, (m.Delivered-m.Sent)/60)
			at = append(at, m.Delivered/3600)
		}
		if m.Oracle >= 0 {
			orc = append(orc, (m.Oracle-m.Sent)/60)
		}
	}
	name := r.World.S.Name
	if err := cdfPlot(filepath.Join(dir, "latency_cdf.png"), name+": latency CDF (fraction of all deliveries)",
		"minutes after sending", "fraction delivered", len(r.Messages), series{"medmesh", del}, series{"oracle (earliest possible)", orc}); err != nil {
		return err
	}
	if err := cdfPlot(filepath.Join(dir, "delivery_over_time.png"), name+": deliveries over time",
		"hours", "fraction of all deliveries done", len(r.Messages), series{"medmesh", at}); err != nil {
		return err
	}
	if r.Convergence == nil {
		return nil
	}
	var conv []float64 // members holding everything written before the heal
	for _, c := range r.Convergence {
		if c >= 0 {
			conv = append(conv, c/60)
		}
	}
	return cdfPlot(filepath.Join(dir, "convergence.png"), name+": convergence after the partition heals",
		"minutes after the heal", "fraction of members converged", len(r.Convergence), series{"medmesh", conv})
}

type series struct {
	name string
	xs   []float64
}

var lineColours = []color.Color{color.RGBA{7, 94, 84, 255}, color.RGBA{200, 60, 60, 255}}

// cdfPlot saves the empirical CDFs of the series, each point's height a
// fraction of total (so undelivered items keep a curve below 1).
func cdfPlot(path, title, x, y string, total int, ss ...series) error {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	n := float64(max(1, total))
	for i, s := range ss {
		sort.Float64s(s.xs)
		pts := make(plotter.XYs, len(s.xs))
		for k, v := range s.xs {
			pts[k] = plotter.XY{X: v, Y: float64(k+1) / n}
		}
		if err := addLine(p, pts, s.name, lineColours[i%len(lineColours)]); err != nil {
			return err
		}
	}
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

func addLine(p *plot.Plot, pts plotter.XYs, name string, c color.Color) error {
	if len(pts) == 0 {
		return nil
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(2)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// Table prints the summary for a person.
func Table(w io.Writer, s Summary) {
	fmt.Fprintf(w, "scenario %s, seed %d, engine %s, %d events\n", s.Scenario, s.Seed, s.Engine, s.Events)
	rows := [][2]string{
		{"delivery ratio", fmt.Sprintf("%.3f (%d of %d)", s.DeliveryRatio, s.Delivered, s.Deliveries)},
		{"undelivered: no path existed", strconv.Itoa(s.NoPath)},
		{"undelivered: path existed, missed", strconv.Itoa(s.Missed)},
		{"latency mean / median / p95 / p99", fmt.Sprintf("%.0f / %.0f / %.0f / %.0f s", s.LatencyMean, s.LatencyMedian, s.LatencyP95, s.LatencyP99)},
		{"latency ÷ oracle (median)", fmt.Sprintf("%.2f", s.LatencyVsOracle)},
		{"overhead ratio", fmt.Sprintf("%.2f", s.OverheadRatio)},
		{"hop count (mean)", fmt.Sprintf("%.2f", s.HopsMean)},
		{"bytes per delivered message", fmt.Sprintf("%.0f", s.BytesPerDelivery)},
		{"envelope bytes on the wire", strconv.FormatInt(s.EnvelopeBytes, 10)},
		{"storage per node", fmt.Sprintf("%.0f bytes", s.StoragePerNode)},
		{"duplicates (dropped copies)", strconv.Itoa(s.Duplicates)},
	}
	if s.ConvergenceS != nil {
		rows = append(rows, [2]string{"convergence after the heal", fmt.Sprintf("%.0f s", *s.ConvergenceS)})
	}
	if s.RevokedSent != nil {
		rows = append(rows,
			[2]string{"CRL learnt: median / max after", fmt.Sprintf("%.0f / %.0f s (%d never)", *s.RevocationLearntMedianS, *s.RevocationLearntMaxS, *s.RevocationNotLearnt)},
			[2]string{"revoked device: sent / shown / standing", fmt.Sprintf("%d / %d / %d", *s.RevokedSent, *s.RevokedShown, *s.RevokedStanding)})
	}
	if s.Carriers != nil {
		rows = append(rows, [2]string{"carriers / most carried at once", fmt.Sprintf("%d / %d bytes", *s.Carriers, *s.CarrierPeakBytes)},
			[2]string{"carriage per carrier: mean / max", fmt.Sprintf("%.0f / %.0f bytes per hour", *s.CarrierBytesPerHourMean, *s.CarrierBytesPerHourMax)})
	}
	if s.SiteBytes != nil {
		rows = append(rows, [2]string{"site links: downs / bytes / gossip msgs", fmt.Sprintf("%d / %d / %d", *s.SiteLinkDowns, *s.SiteBytes, *s.WANGossip)})
	}
	if s.TimeScale > 0 {
		rows = append(rows, [2]string{"time scale (scenario s per wall s)", fmt.Sprintf("%.0f", s.TimeScale)},
			[2]string{"lag (scenario s the machine ran late)", fmt.Sprintf("%.0f", s.LagS)})
		if len(s.LagByPartS) > 0 {
			rows = append(rows, [2]string{"lag by twelfth of the run", strings.Trim(fmt.Sprintf("%.0f", s.LagByPartS), "[]")})
		}
	}
	if s.Failures > 0 {
		rows = append(rows, [2]string{"failures (writes, CRLs)", strconv.Itoa(s.Failures)})
	}
	for _, row := range rows {
		fmt.Fprintf(w, "  %-40s %s\n", row[0], row[1])
	}
}
