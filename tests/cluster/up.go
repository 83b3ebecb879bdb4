package cluster

import (
	"context"
	"fmt"
	"time"
)

// Timings are what Up measured.
type Timings struct {
	ServerAPI   time.Duration // server start to /readyz through the switch
	ServerReady time.Duration // server start to its node Ready
	AgentsReady time.Duration // agents' start to all Ready
	Total       time.Duration // Up's whole run, namespaces included
}

// Up makes a cluster of n nodes: pi1 runs bramble server, pi2..pin bramble
// agent; it returns once every node is Ready. On error the cluster is left
// as it is for inspection: call Down.
func (c *Cluster) Up(ctx context.Context, n int) (Timings, error) {
	var t Timings
	begin := time.Now()
	if n < 1 || n > 200 {
		return t, fmt.Errorf("%d nodes: want 1..200", n)
	}
	if len(c.Nodes()) > 0 {
		return t, fmt.Errorf("cluster %s exists already (state in %s): down it first", c.cfg.Name, c.cfg.StateDir)
	}
	nodes := make([]*Node, 0, n)
	for i := 1; i <= n; i++ {
		role := RoleAgent
		if i == 1 {
			role = RoleServer
		}
		node, err := c.AddNode(NodeOptions{Host: fmt.Sprintf("pi%d", i), Index: i, Role: role})
		if err != nil {
			return t, err
		}
		nodes = append(nodes, node)
	}
	c.cfg.Logf("namespaces for %d nodes made in %.1f s", n, time.Since(begin).Seconds())

	server := nodes[0]
	if _, err := c.StartServer(server); err != nil {
		return t, err
	}
	if err := c.WaitAPI(ctx); err != nil {
		return t, err
	}
	t.ServerAPI = time.Since(server.Started)
	c.cfg.Logf("server API ready after %.1f s", t.ServerAPI.Seconds())
	if err := c.WaitReady(ctx, true, server); err != nil {
		return t, err
	}
	t.ServerReady = time.Since(server.Started)
	c.cfg.Logf("node %s Ready after %.1f s", server.NodeName, t.ServerReady.Seconds())

	if n > 1 {
		token, err := c.Token()
		if err != nil {
			return t, err
		}
		agentsBegin := time.Now()
		for _, a := range nodes[1:] {
			if _, err := c.StartAgent(a, token); err != nil {
				return t, err
			}
		}
		if err := c.WaitReady(ctx, true, nodes[1:]...); err != nil {
			return t, err
		}
		t.AgentsReady = time.Since(agentsBegin)
		c.cfg.Logf("%d agents Ready after %.1f s", n-1, t.AgentsReady.Seconds())
	}
	t.Total = time.Since(begin)
	return t, nil
}
