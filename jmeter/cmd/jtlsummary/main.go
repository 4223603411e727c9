// Command jtlsummary turns a CSV .jtl from a run of jmeter/coupon-flash.jmx into the figures that
// matter (requests/s, p50/p95/p99, answers per status and per sampler) and checks the run: every
// answer 201, 409 or 410, and the 201s equal to what the service says it issued, never above the
// stock. It exits 1 when a check fails, 2 on usage or I/O errors.
//
//	go run ./jmeter/cmd/jtlsummary -jtl results.jtl -url http://127.0.0.1:8080/api/v1 [-before before.json]
//
// -url asks the service for GET /api/v1/coupons after the run; -before is that same answer saved
// before the run (curl -s URL/coupons > before.json), so the comparison holds on a database that
// had issued coupons already. Without -before the 201s are compared with issuedQuantity itself
// (a fresh database). Without -url only the .jtl is checked.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"couponsvc/jmeter"
)

func main() {
	jtl := flag.String("jtl", "", "CSV .jtl file (required)")
	url := flag.String("url", "", "API base URL to compare with, e.g. http://127.0.0.1:8080/api/v1 (optional)")
	beforeFile := flag.String("before", "", "GET /api/v1/coupons saved before the run (optional)")
	flag.Parse()
	if *jtl == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	samples, err := jmeter.ReadJTLFile(*jtl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jtlsummary:", err)
		os.Exit(2)
	}
	var before, after []jmeter.Coupon
	if *beforeFile != "" {
		if before, err = jmeter.ReadCouponsFile(*beforeFile); err != nil {
			fmt.Fprintln(os.Stderr, "jtlsummary:", err)
			os.Exit(2)
		}
	}
	if *url != "" {
		if after, err = jmeter.FetchCoupons(context.Background(), *url); err != nil {
			fmt.Fprintln(os.Stderr, "jtlsummary:", err)
			os.Exit(2)
		}
	}
	os.Exit(report(samples, before, after))
}

func report(samples []jmeter.Sample, before, after []jmeter.Coupon) int {
	s := jmeter.Summarize(samples)
	s.Write(os.Stdout)
	if after != nil {
		fmt.Println()
		jmeter.WriteCoupons(os.Stdout, s, before, after)
	}
	fmt.Println()
	problems := jmeter.Verify(s, before, after)
	if len(problems) == 0 {
		fmt.Println("PASS")
		return 0
	}
	for _, p := range problems {
		fmt.Println("FAIL:", p)
	}
	return 1
}
