package handler

import (
	"couponsvc/domain"

	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// decodeIssue runs the issue route's decoding and validation on a raw request.
func decodeIssue(body []byte, contentType string) (uuid.UUID, error) {
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(http.MethodPost, "/api/v1/coupons/A0001/issue", bytes.NewReader(body))
	if contentType != "" {
		c.Request.Header.Set("Content-Type", contentType)
	}
	var req IssueRequest
	if err := decodeJSON(c, maxBodyBytes, &req); err != nil {
		return uuid.Nil, err
	}
	if req.UserID == "" {
		return uuid.Nil, errMissing("userId")
	}
	return service.ParseUserID(req.UserID)
}

// FuzzDecodeIssueRequest: any body and content type yields a valid user id or an
// INVALID_REQUEST error (ErrInvalid), never a panic or another error.
func FuzzDecodeIssueRequest(f *testing.F) {
	for _, seed := range []struct{ body, ct string }{
		{`{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, "application/json"},
		{`{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, ""},
		{`{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f","userId":"00000000-0000-0000-0000-000000000001"}`, "application/json"},
		{`{"userId":"00000000-0000-0000-0000-000000000000"}`, "application/json; charset=utf-8"},
		{`{"userId":{"a":{"b":[1,2,{"c":null}]}}}`, "application/json"},
		{`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`, "application/json"},
		{`{"userId":"3f2b8c1e5d6a4c7b9e0f1a2b3c4d5e6f"}`, "text/plain"},
		{"{\"userId\":\"\xff\xfe\"}", "application/json"},
		{`{"userId":"urn:uuid:3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, "application/json"},
		{`  {"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}  {}`, "application/json"},
		{`null`, ""},
	} {
		f.Add([]byte(seed.body), seed.ct)
	}
	gin.SetMode(gin.ReleaseMode)
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		id, err := decodeIssue(body, contentType)
		switch {
		case err != nil && !errors.Is(err, domain.ErrInvalid):
			t.Fatalf("error outside the API (docs/API.md): %v", err)
		case err == nil && id == uuid.Nil:
			t.Fatal("accepted the nil UUID")
		case err == nil && len(body) > maxBodyBytes:
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		// The fast path agrees with encoding/json whenever it takes a body.
		var fast, full IssueRequest
		if decodeIssueFast(body, &fast) {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&full); err != nil || full != fast {
				t.Fatalf("fast path took %q as %+v; encoding/json: %+v, %v", body, fast, full, err)
			}
		}
	})
}

func TestDecodeHostileInputs(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	good := `{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`
	deep := bytes.Repeat([]byte(`{"a":`), 10000)
	for _, tc := range []struct {
		name, body, ct string
		ok             bool
	}{
		{"valid", good, "application/json", true},
		{"valid with charset", good, "application/json; charset=utf-8", true},
		{"no content type", good, "", false},
		{"key in another case", `{"USERID":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, "application/json", false},
		{"key twice in two cases", `{"userId":"00000000-0000-0000-0000-000000000001","USERID":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, "application/json", false},
		{"wrong content type", good, "text/plain", false},
		{"form content type", `userId=3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f`, "application/x-www-form-urlencoded", false},
		{"duplicated key", `{"userId":"00000000-0000-0000-0000-000000000001","userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"}`, "application/json", false},
		{"deep nesting", `{"userId":` + string(deep), "application/json", false},
		{"huge body", `{"userId":"` + string(bytes.Repeat([]byte("a"), 1<<20)) + `"}`, "application/json", false},
		{"nil UUID", `{"userId":"00000000-0000-0000-0000-000000000000"}`, "application/json", false},
		{"braced UUID", `{"userId":"{3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f}"}`, "application/json", false},
		{"SQL in userId", `{"userId":"'; DROP TABLE coupon; --"}`, "application/json", false},
		{"invalid UTF-8", "{\"userId\":\"\xff\"}", "application/json", false},
		{"unknown field", `{"userId":"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f","role":"admin"}`, "application/json", false},
	} {
		_, err := decodeIssue([]byte(tc.body), tc.ct)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, domain.ErrInvalid)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
