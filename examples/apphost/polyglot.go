package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/goaspire/goaspire/internal/polyglot"
)

// The polyglot part: how many tasks the Python producer sends the Node
// consumer, and how many events the Python publisher broadcasts.
const (
	polyglotTasks  = 20
	polyglotEvents = 10
)

// polyglotStack is the services in other languages beside the Go ones,
// from examples/apphost/polyglot: a Node.js consumer of the "tasks" queue
// (amqplib, with express for its health), a Python producer of those tasks
// (pika) and a Python publisher of Redis events (redis-py) that the
// catalogs subscribe to.
type polyglotStack struct {
	dir      string
	environ  []string // the launcher's, as the services get it
	python   string   // "" when python3 with pika and redis is missing
	consumer *service // nil without node, the Python producer or RabbitMQ
}

func (p *polyglotStack) services() []*service {
	if p == nil || p.consumer == nil {
		return nil
	}
	return []*service{p.consumer}
}

// startPolyglot finds python3 (with pika and redis) and node, installs the
// npm packages from the lockfile when they are missing (npm ci, as an
// AppHost installs a JavaScript app's packages), and starts the Node
// consumer with what an AppHost injects. What is missing is skipped, with
// a line saying so.
func startPolyglot(ctx context.Context, out io.Writer, cfg config, st *stack) (*polyglotStack, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	p := &polyglotStack{dir: polyglot.Dir(root), environ: cfg.environ}
	if p.python, err = polyglot.Python(ctx, "pika", "redis"); err != nil {
		fmt.Fprintf(out, "· %v: the Python producer, the Python publisher and the Node consumer are skipped\n", err)
		return p, nil
	}
	fmt.Fprintf(out, "· Python: %s (pika, redis)\n", p.python)
	if st.jobs == nil {
		fmt.Fprintln(out, "· no RabbitMQ: the Python producer and the Node consumer are skipped")
		return p, nil
	}
	node, _, err := polyglot.Node()
	if err != nil {
		fmt.Fprintf(out, "· %v: the Python producer and the Node consumer are skipped\n", err)
		return p, nil
	}
	fmt.Fprintf(out, "· Node.js: %s; packages of %s (npm ci when missing) ... ", node, polyglot.DirName)
	if err := polyglot.NodeModules(ctx, p.dir); err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "ok")
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	env := injected{"PORT": strconv.Itoa(port)}
	env.connection("messaging", st.jobs.conn, amqpProperties)
	p.consumer = &service{
		name: "tasks-node", binary: node, args: []string{filepath.Join(p.dir, "consumer.js")}, port: port,
		env: env.environ(cfg.environ), logPath: filepath.Join(st.dir, "tasks-node.log"),
	}
	if err := p.consumer.start(); err != nil {
		return nil, err
	}
	if err := p.consumer.waitHealthy(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "· %-12s healthy at %s (node consumer.js)\n", p.consumer.name, p.consumer.url())
	return p, nil
}

// runPython runs one of the Python scripts to its end with env, as an
// AppHost runs a Python executable with its references; its output, with
// the launcher's secrets masked, is in the error when it fails.
func (p *polyglotStack) runPython(ctx context.Context, st *stack, env injected, script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.python, append([]string{filepath.Join(p.dir, script)}, args...)...)
	cmd.Env = env.environ(p.environ)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	text := strings.TrimSpace(buf.String())
	for _, secret := range st.jobs.secrets(st.res.secrets()) {
		if secret != "" {
			text = strings.ReplaceAll(text, secret, "***")
		}
	}
	if err != nil {
		return "", fmt.Errorf("python3 %s: %w\n%s", script, err, text)
	}
	return text, nil
}

// runPolyglotScenario has the Python producer send tasks to the Node
// consumer through RabbitMQ, and the Python publisher broadcast events to
// the catalogs through Redis, and checks that each arrived once, then
// stops the Node consumer (the jobs scenario restarts RabbitMQ).
func runPolyglotScenario(ctx context.Context, out io.Writer, st *stack) error {
	p := st.polyglot
	if p == nil || p.python == "" {
		fmt.Fprintln(out, "  · skipped: see above")
		return nil
	}
	c := &client{http: &http.Client{Timeout: 10 * time.Second}, out: out}
	if p.consumer != nil {
		prefix := "task-" + randomHex(4)
		env := injected{}
		env.connection("messaging", st.jobs.conn, amqpProperties)
		if _, err := p.runPython(ctx, st, env, "producer.py", strconv.Itoa(polyglotTasks), prefix); err != nil {
			return err
		}
		var got struct {
			Count    int
			Messages []struct {
				ID, Body string
			}
		}
		// Only this run's tasks count: a broker the environment names may
		// hold others in the queue.
		seen := map[string]int{}
		if err := eventually(ctx, time.Minute, "the Node consumer has every task", func() (bool, error) {
			_, err := c.do(ctx, http.MethodGet, p.consumer.url()+"/received", nil, nil, &got)
			seen = map[string]int{}
			for _, m := range got.Messages {
				if strings.HasPrefix(m.ID, prefix+"-") {
					seen[m.ID]++
				}
			}
			return len(seen) >= polyglotTasks, err
		}); err != nil {
			return fmt.Errorf("%w (it has %d of them)", err, len(seen))
		}
		for i := range polyglotTasks {
			if id := prefix + "-" + strconv.Itoa(i); seen[id] != 1 {
				return fmt.Errorf("the Node consumer got task %s %d times, want once", id, seen[id])
			}
		}
		if len(seen) != polyglotTasks {
			return fmt.Errorf("the Node consumer got %d distinct tasks of this run, want %d", len(seen), polyglotTasks)
		}
		c.step("Python producer (pika, queue_declare('tasks', durable=True)) → RabbitMQ → Node consumer (amqplib, assertQueue('tasks')): %d tasks, each consumed once", polyglotTasks)
		if err := p.consumer.stop(30 * time.Second); err != nil {
			return err
		}
		c.step("Node consumer stopped cleanly (SIGTERM)")
	}

	live := st.catalogs // all running: this part comes before the fault steps
	prefix := "u" + randomHex(4)
	env := injected{}
	env.connection("cache", st.res.redisConn, redisProperties)
	if _, err := p.runPython(ctx, st, env, "publisher.py", strconv.Itoa(len(live)), strconv.Itoa(polyglotEvents), prefix); err != nil {
		return err
	}
	for _, cat := range live {
		var counts map[string]int
		if err := eventually(ctx, 30*time.Second, cat.name+" has every event", func() (bool, error) {
			s, err := c.stats(ctx, cat)
			counts = map[string]int{}
			for _, ev := range s.Events.Recent {
				if strings.HasPrefix(ev, "user.created:"+prefix+"-") {
					counts[ev]++
				}
			}
			return len(counts) == polyglotEvents, err
		}); err != nil {
			return fmt.Errorf("%w: it has %v", err, counts)
		}
		for i := range polyglotEvents {
			if ev := "user.created:" + prefix + "-" + strconv.Itoa(i); counts[ev] != 1 {
				return fmt.Errorf("%s received %q %d times, want once", cat.name, ev, counts[ev])
			}
		}
	}
	c.step("Python publisher (redis-py, publish('events', 'user.created:…')) → Redis → %d catalog instances (redisevents.Subscribe): %d events, each received once by each, as published",
		len(live), polyglotEvents)
	return nil
}
