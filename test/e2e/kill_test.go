package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/shop"
)

// The test binary doubles as a shop process, so a test can kill a real
// process mid-saga (SIGKILL: no shutdown hooks run) and start a new one on
// the same data.
const (
	childData    = "MERCATO_E2E_CHILD_DATA"
	childAddr    = "MERCATO_E2E_CHILD_ADDR"
	childLatency = "MERCATO_E2E_CHILD_PROVIDER_LATENCY"
)

func TestMain(m *testing.M) {
	if data := os.Getenv(childData); data != "" {
		if err := runChild(data); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(data string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	latency, _ := time.ParseDuration(os.Getenv(childLatency))
	// SIGUSR1 stops the broker: what the services commit from then on stays
	// in their outboxes, unpublished.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	return shop.Run(ctx, shop.Config{
		Addr:          os.Getenv(childAddr),
		DataDir:       data,
		AdminPassword: "admin password",
		LogOutput:     io.Discard,
		ShipAfter:     time.Hour,
	}, func(s *shop.Shop) {
		s.Provider().SetLatency(latency)
		go func() {
			<-usr1
			s.StopBroker()
			fmt.Println("broker stopped")
		}()
		fmt.Println("ready")
	})
}

// startChild starts a shop process and waits until it serves.
func startChild(t *testing.T, data, addr string, latency time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childData+"="+data, childAddr+"="+addr, childLatency+"="+latency.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			switch strings.TrimSpace(sc.Text()) {
			case "ready":
				ready <- true
			case "broker stopped":
				childLines <- "broker stopped"
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the shop process exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the shop process did not get ready")
	}
	return cmd
}

// childLines passes the child's later announcements to the test.
var childLines = make(chan string, 1)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A process killed while the saga waits for the payment provider: the new
// process resumes the saga, which ends CONFIRMED with one capture and one
// reservation.
func TestShop_SagaSurvivesAKilledProcess(t *testing.T) {
	data, addr := t.TempDir(), freeAddr(t)
	first := startChild(t, data, addr, time.Minute) // the provider hangs
	c := client{t: t, base: "http://" + addr}
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	_, o := c.placeOrder(ann, mug.ID, 2, "tok_ok")

	// Mid-saga: stock reserved, payment started and stuck at the provider.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps := c.payments(ann, o.ID)
		if len(ps) == 1 && ps[0].Status == "PENDING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the saga did not reach the payment step: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("stock before the kill: %d, want %d", got, mug.Available-2)
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	startChild(t, data, addr, 0)
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("after restart: %+v", got)
	}
	ps := c.payments(ann, o.ID)
	if len(ps) != 1 || ps[0].Status != "CAPTURED" {
		t.Fatalf("payments after restart: %+v", ps)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("stock after restart: %d, want %d (one reservation)", got, mug.Available-2)
	}
}

// A process killed between its commits and their publication: the order
// and its first command are committed while the broker is down, the process
// dies; the new process relays them from the outbox, exactly once, and the
// saga completes.
func TestShop_KilledBetweenCommitAndPublish(t *testing.T) {
	data, addr := t.TempDir(), freeAddr(t)
	first := startChild(t, data, addr, 0)
	c := client{t: t, base: "http://" + addr}
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]

	if err := first.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-childLines:
	case <-time.After(30 * time.Second):
		t.Fatal("the broker did not stop")
	}
	r, o := c.placeOrder(ann, mug.ID, 2, "tok_ok")
	if r.status != 202 {
		t.Fatalf("order with the broker down: %d %s", r.status, r.body)
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	// The dead process committed the order with what it sends.
	db, err := storage.Open(context.Background(), storage.SQLiteDSN(data, "order"))
	if err != nil {
		t.Fatal(err)
	}
	var pending int
	if err := db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if pending != 2 { // order.created, inventory.cmd.reserve
		t.Fatalf("%d events in the dead process's outbox, want 2", pending)
	}

	startChild(t, data, addr, 0)
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("after restart: %+v", got)
	}
	if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "CAPTURED" {
		t.Fatalf("payments: %+v", ps)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("stock %d, want %d", got, mug.Available-2)
	}
}
