package jmeter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Plan defaults, as in coupon-flash.jmx.
const (
	DefaultProtocol = "http"
	DefaultHost     = "127.0.0.1"
	DefaultPort     = "8080"
	DefaultBasePath = "/api/v1"
)

// RunOptions says how to run the plan.
type RunOptions struct {
	Dir    string   // directory holding jmeter.sh and coupon-flash.jmx (this package's directory)
	Plan   string   // plan file; default Dir/coupon-flash.jmx
	JTL    string   // results file (replaced); required
	Log    string   // jmeter.log; default beside JTL
	Args   []string // further JMeter arguments, typically -Jname=value properties
	Stdout io.Writer
	Stderr io.Writer
}

// ErrNoJMeter is returned by Run when no jmeter command is installed.
var ErrNoJMeter = errors.New("jmeter is not installed (Debian/Ubuntu: apt-get install -y --no-install-recommends jmeter jmeter-http; or JMeter 5.x from https://jmeter.apache.org, or set JMETER=/path/to/bin/jmeter)")

// Installed reports whether a jmeter command is available (JMETER or jmeter on PATH).
func Installed() bool {
	if j := os.Getenv("JMETER"); j != "" {
		_, err := os.Stat(j)
		return err == nil
	}
	_, err := exec.LookPath("jmeter")
	return err == nil
}

// Run runs the plan headless through jmeter.sh (which makes Debian's JMeter 2.13 work) with a
// CSV .jtl that has a header line and start timestamps on every JMeter version. JMeter's own
// exit status says only whether it ran; whether the requests passed is in the .jtl.
func Run(ctx context.Context, o RunOptions) error {
	if !Installed() {
		return ErrNoJMeter
	}
	if o.JTL == "" {
		return errors.New("jmeter: RunOptions.JTL is required")
	}
	plan := o.Plan
	if plan == "" {
		plan = filepath.Join(o.Dir, "coupon-flash.jmx")
	}
	log := o.Log
	if log == "" {
		log = strings.TrimSuffix(o.JTL, filepath.Ext(o.JTL)) + ".log"
	}
	if err := os.MkdirAll(filepath.Dir(o.JTL), 0o755); err != nil {
		return err
	}
	if err := os.Remove(o.JTL); err != nil && !errors.Is(err, os.ErrNotExist) { // JMeter appends
		return err
	}
	args := []string{filepath.Join(o.Dir, "jmeter.sh"), "-n", "-t", plan, "-l", o.JTL, "-j", log,
		"-Jjmeter.save.saveservice.output_format=csv",
		"-Jjmeter.save.saveservice.print_field_names=true",
		"-Jjmeter.save.saveservice.timestamp_format=ms",
		"-Jsampleresult.timestamp.start=true",
		"-Jsummariser.interval=10",
		"-Jjmeterengine.nongui.port=0", // no UDP shutdown listener: runs may overlap
	}
	args = append(args, o.Args...)
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("jmeter: %w (log: %s)", err, log)
	}
	if _, err := os.Stat(o.JTL); err != nil {
		return fmt.Errorf("jmeter wrote no results (log: %s): %w", log, err)
	}
	return nil
}

// Prop returns the value of -Jname=value in args (the last one wins), or def.
func Prop(args []string, name, def string) string {
	v := def
	for _, a := range args {
		if rest, ok := strings.CutPrefix(a, "-J"+name+"="); ok {
			v = rest
		}
	}
	return v
}

// APIURL is the API base the plan targets with these JMeter arguments (-Jprotocol, -Jhost,
// -Jport, -JbasePath, with the plan's defaults), e.g. http://127.0.0.1:8080/api/v1.
func APIURL(args []string) string {
	return fmt.Sprintf("%s://%s:%s%s", Prop(args, "protocol", DefaultProtocol),
		Prop(args, "host", DefaultHost), Prop(args, "port", DefaultPort),
		Prop(args, "basePath", DefaultBasePath))
}

// WithTokens returns args that run the plan's identity-mode thread group instead of the demo one:
// the CSV of users and tokens at file (userId,token per line, as go run ./cmd/tokens writes it),
// with the threads args asked for (-Jthreads, default 500). The CSV needs threads x loops lines.
func WithTokens(args []string, file string) ([]string, error) {
	abs, err := filepath.Abs(file) // JMeter resolves a relative CSV path against the plan's directory
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	return append(append([]string(nil), args...), "-Jtokens="+abs,
		"-JtokenThreads="+Prop(args, "threads", "500"), "-Jthreads=0"), nil
}
