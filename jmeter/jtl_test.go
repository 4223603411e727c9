package jmeter

import (
	"strings"
	"testing"
	"time"
)

// A .jtl as JMeter 5.6 writes it: header line, more columns, quoted fields.
const jtl56 = `timeStamp,elapsed,label,responseCode,responseMessage,threadName,dataType,success,failureMessage,bytes,sentBytes,grpThreads,allThreads,URL,Latency,IdleTime,Connect
1700000000000,10,issue A0001,201,Created,flash crowd 1-1,text,true,,300,200,1,1,http://h/api/v1/coupons/A0001/issue,10,0,1
1700000000005,20,issue A0001,410,Gone,flash crowd 1-2,text,true,,300,200,1,1,http://h/api/v1/coupons/A0001/issue,20,0,1
1700000000010,30,retry A0001,409,Conflict,flash crowd 1-1,text,true,,300,200,1,1,http://h/api/v1/coupons/A0001/issue,30,0,1
1700000000020,40,issue B0001,503,Service Unavailable,flash crowd 1-3,text,false,"Test failed: code expected to match /201|409|410/, got 503",300,200,1,1,http://h/api/v1/coupons/B0001/issue,40,0,1
1700000000990,10,issue B0001,201,Created,flash crowd 1-3,text,true,,300,200,1,1,http://h/api/v1/coupons/B0001/issue,10,0,1
`

// A .jtl as Debian's JMeter 2.13 writes it by default: no header line.
const jtl213 = `1700000000000,5,issue C0001,201,Created,flash crowd 1-1,text,true,171,1,1,5
1700000000100,7,issue C0001,Non HTTP response code: java.net.ConnectException,"Non HTTP response message: Connection refused",flash crowd 1-2,text,false,1630,1,1,0
`

func TestReadJTL56(t *testing.T) {
	samples, err := ReadJTL(strings.NewReader(jtl56))
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 5 {
		t.Fatalf("got %d samples, want 5", len(samples))
	}
	if got := samples[3]; got.Code != "503" || got.Success || !strings.Contains(got.Message, "got 503") || got.Elapsed != 40*time.Millisecond {
		t.Errorf("sample 3 = %+v", got)
	}
	s := Summarize(samples)
	if s.Samples != 5 || s.Failed != 1 || s.ServerError != 1 || s.NonHTTP != 0 {
		t.Errorf("counts: %+v", s)
	}
	if s.Issued["A0001"] != 1 || s.Issued["B0001"] != 1 {
		t.Errorf("issued: %v", s.Issued)
	}
	if s.Duration != time.Second || s.PerSecond != 5 {
		t.Errorf("duration %v, rate %v; want 1s, 5/s", s.Duration, s.PerSecond)
	}
	if s.P50 != 20*time.Millisecond || s.P95 != 40*time.Millisecond || s.P99 != 40*time.Millisecond || s.Max != 40*time.Millisecond {
		t.Errorf("percentiles: p50 %v p95 %v p99 %v max %v", s.P50, s.P95, s.P99, s.Max)
	}
	problems := Verify(s, nil, nil)
	if len(problems) != 1 || !strings.Contains(problems[0], "5xx 1") {
		t.Errorf("Verify: %q; want the one 503", problems)
	}
}

func TestReadJTL213(t *testing.T) {
	samples, err := ReadJTL(strings.NewReader(jtl213))
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(samples)
	if s.Samples != 2 || s.Failed != 1 || s.NonHTTP != 1 || s.ByStatus["non-HTTP"] != 1 || s.Issued["C0001"] != 1 {
		t.Errorf("summary: %+v", s)
	}
}

func TestVerifyAgainstService(t *testing.T) {
	samples, err := ReadJTL(strings.NewReader(jtl56))
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(samples[:3]) // 201, 410, 409 on A0001
	before := []Coupon{{Code: "A0001", TotalQuantity: 2, IssuedQuantity: 1, Remaining: 1}}
	good := []Coupon{{Code: "A0001", TotalQuantity: 2, IssuedQuantity: 2, Remaining: 0}}
	if p := Verify(s, before, good); len(p) != 0 {
		t.Errorf("Verify(good) = %q", p)
	}
	if p := Verify(s, nil, good); len(p) != 1 || !strings.Contains(p[0], "issued 2 during the run but the .jtl has 1") {
		t.Errorf("Verify without before, non-fresh database = %q", p)
	}
	over := []Coupon{{Code: "A0001", TotalQuantity: 2, IssuedQuantity: 3, Remaining: -1}}
	if p := Verify(s, before, over); len(p) == 0 || !strings.Contains(strings.Join(p, "\n"), "above totalQuantity") {
		t.Errorf("Verify(over-issued) = %q", p)
	}
	notSoldOut := []Coupon{{Code: "A0001", TotalQuantity: 5, IssuedQuantity: 2, Remaining: 3}}
	if p := Verify(s, before, notSoldOut); len(p) != 1 || !strings.Contains(p[0], "410 SOLD_OUT but issued 2 of 5") {
		t.Errorf("Verify(410 with stock left) = %q", p)
	}
	dup := Summarize([]Sample{{Label: "issue A0001", Code: "409", Success: true}})
	if p := Verify(dup, nil, nil); len(p) != 1 || !strings.Contains(p[0], "first requests of fresh users answered 409") {
		t.Errorf("Verify(fresh 409) = %q", p)
	}
}

func TestParseCoupons(t *testing.T) {
	for _, body := range []string{
		`[{"code":"A0001","totalQuantity":300,"issuedQuantity":12,"remaining":288}]`,
		`{"coupons":[{"code":"A0001","totalQuantity":300,"issuedQuantity":12,"remaining":288}]}`,
	} {
		c, err := ParseCoupons([]byte(body))
		if err != nil || len(c) != 1 || c[0] != (Coupon{"A0001", 300, 12, 288}) {
			t.Errorf("ParseCoupons(%s) = %+v, %v", body, c, err)
		}
	}
}

func TestAPIURL(t *testing.T) {
	if got := APIURL(nil); got != "http://127.0.0.1:8080/api/v1" {
		t.Errorf("default: %s", got)
	}
	if got := APIURL([]string{"-Jhost=192.168.49.2", "-Jport=80", "-Jport=81", "-Jprotocol=https"}); got != "https://192.168.49.2:81/api/v1" {
		t.Errorf("got %s", got)
	}
}
