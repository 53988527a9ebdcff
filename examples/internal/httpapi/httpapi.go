// Package httpapi holds the small HTTP helpers the example services share:
// JSON responses and errors in the standard error format of Aspire's production patterns.
package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// ErrorBody is the standard error envelope of Aspire's production patterns:
//
//	{"error": {"code": "...", "message": "...", "statusCode": 404, "timestamp": "..."}}
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of ErrorBody.
type ErrorDetail struct {
	Code       string    `json:"code"`
	Message    string    `json:"message"`
	StatusCode int       `json:"statusCode"`
	Timestamp  time.Time `json:"timestamp"`
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing response", "error", err)
	}
}

// WriteError writes the standard error envelope. code is a stable,
// machine-readable word ("not_found", "invalid_request"); message is for
// people and must not contain secrets.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{
		Code:       code,
		Message:    message,
		StatusCode: status,
		Timestamp:  time.Now().UTC(),
	}})
}

// DecodeJSON reads a JSON request body of at most 1 MiB into v, refusing
// unknown fields. It answers the request with a 400 and returns false when
// the body is unusable.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_request", "request body is not valid JSON for this endpoint: "+err.Error())
		return false
	}
	return true
}
