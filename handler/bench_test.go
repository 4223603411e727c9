package handler

import (
	"testing"

	"github.com/gin-gonic/gin"
)

// BenchmarkDecodeIssueRequest measures the issue route's decoding and validation of a body.
func BenchmarkDecodeIssueRequest(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	body := []byte(`{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeIssue(body, "application/json"); err != nil {
			b.Fatal(err)
		}
	}
}
