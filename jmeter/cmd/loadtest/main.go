// Command loadtest runs the flash-crowd plan jmeter/coupon-flash.jmx headless against a running
// couponsvc, then prints the figures and checks the run (see jtlsummary). Arguments after the
// flags go to JMeter, typically -J properties of the plan:
//
//	go run ./jmeter/cmd/loadtest                                   # local service on :8080
//	go run ./jmeter/cmd/loadtest -- -Jhost=$(minikube ip) -Jport=80  # through the Ingress
//	go run ./jmeter/cmd/loadtest -- -Jthreads=1000 -Jloops=10 -JmixA=50 -JmixB=50 -JmixC=0
//	go run ./jmeter/cmd/loadtest -tokens tokens.csv                # identity mode (go run ./cmd/tokens)
//
// It saves GET /api/v1/coupons before the run as OUT/before.json, the results as OUT/results.jtl
// and JMeter's log as OUT/results.log, so the run can be summarised again later with jtlsummary.
// It works with JMeter 5.x and with Debian's JMeter 2.13 (through jmeter/jmeter.sh). Exit status:
// 0 when every check passed, 1 when one failed, 2 when the run could not be made.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"couponsvc/jmeter"
)

func main() {
	dir := flag.String("dir", "jmeter", "directory holding jmeter.sh and coupon-flash.jmx")
	out := flag.String("out", filepath.Join("jmeter", "results"), "directory for before.json, results.jtl and results.log")
	tokens := flag.String("tokens", "", "identity mode: CSV of userId,token lines (go run ./cmd/tokens); every request carries its user's bearer token")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: loadtest [-dir jmeter] [-out jmeter/results] [-tokens tokens.csv] [-- -Jname=value ...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if *tokens != "" {
		var err error
		if args, err = jmeter.WithTokens(args, *tokens); err != nil {
			fail("%v", err)
		}
	}
	api := jmeter.APIURL(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	before, err := jmeter.FetchCoupons(ctx, api)
	if err != nil {
		fail("is the service up? %v", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail("%v", err)
	}
	if err := jmeter.WriteCouponsFile(filepath.Join(*out, "before.json"), before); err != nil {
		fail("%v", err)
	}
	jtl := filepath.Join(*out, "results.jtl")
	fmt.Printf("JMeter: %s against %s\n", filepath.Join(*dir, "coupon-flash.jmx"), api)
	err = jmeter.Run(ctx, jmeter.RunOptions{Dir: *dir, JTL: jtl, Args: args, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fail("%v", err)
	}
	samples, err := jmeter.ReadJTLFile(jtl)
	if err != nil {
		fail("%v", err)
	}
	// An instance answers coupon reads from a snapshot at most 1 s old for issues made by the
	// others (it re-reads at once after its own): behind an Ingress, let that second pass.
	time.Sleep(1100 * time.Millisecond)
	after, err := jmeter.FetchCoupons(ctx, api)
	if err != nil {
		fail("after the run: %v", err)
	}
	s := jmeter.Summarize(samples)
	fmt.Println()
	s.Write(os.Stdout)
	fmt.Println()
	jmeter.WriteCoupons(os.Stdout, s, before, after)
	fmt.Println()
	problems := jmeter.Verify(s, before, after)
	for _, p := range problems {
		fmt.Println("FAIL:", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("PASS (results: %s)\n", jtl)
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", a...)
	os.Exit(2)
}
