package main

import (
	"fmt"
	"runtime"
	"strings"
)

// The footprint goals (issue 12), in the order the summary prints them.
// Scenarios record what they measured under a row's key.
var goals = []struct{ key, figure, goal string }{
	{"server-pss", "server idle PSS, bramble + its containerd, after 3 min", "<= 235 MiB"},
	{"server-anon", "  of that, anonymous memory", "<= 140 MiB"},
	{"agent-rss", "agent idle RSS, bramble + containerd", "<= 120 MiB"},
	{"server-cpu", "idle CPU, server", "<= 3 % of a core"},
	{"server-writes", "idle disk writes, server, per minute", "<= 0.2 MiB"},
	{"start-ready", "start to node Ready, fresh data dir", "<= 4 s"},
	{"restart-ready", "restart to node Ready", "<= 2.5 s"},
	{"churn-sqlite", "SQLite file after 24 h of churn", "<= 64 MB, bounded"},
	{"bundle-rss", "whole bundle: server, CoreDNS, Traefik, 3 Plumber; total RSS", "<= 700 MiB"},
}

type result struct{ measured, load string }

// results holds the figures measured in this run, by goal key. The bench runs
// its scenarios one after the other, so no lock.
var results = map[string]result{}

// record notes a figure of the goal table, read now, and returns the load
// average it was read at (to print with it).
func record(key, measured string) string {
	l := loadavg()
	results[key] = result{measured, l}
	return l
}

// printSummary prints the goal table with what this run measured.
func printSummary(notRun map[string]string) {
	fmt.Printf("== summary (this machine: %s, %d CPUs; the goals are for a Raspberry Pi)\n", runtime.GOARCH, runtime.NumCPU())
	rows := [][]string{{"figure", "measured", "goal", "load"}}
	for _, g := range goals {
		r, ok := results[g.key]
		if !ok {
			r = result{"not measured", "-"}
			if why := notRun[g.key]; why != "" {
				r.measured += " (" + why + ")"
			}
		}
		rows = append(rows, []string{g.figure, r.measured, g.goal, r.load})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len(cell))
		}
	}
	for n, row := range rows {
		cells := make([]string, len(row))
		for i, cell := range row {
			cells[i] = fmt.Sprintf("%-*s", width[i], cell)
		}
		fmt.Println(strings.TrimRight(strings.Join(cells, " | "), " "))
		if n == 0 {
			for i := range cells {
				cells[i] = strings.Repeat("-", width[i])
			}
			fmt.Println(strings.Join(cells, "-|-"))
		}
	}
}
