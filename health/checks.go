package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/goaspire/goaspire/internal/redact"
)

// HTTP returns a check, tagged TagReady, that sends GET target through
// client (http.DefaultClient when nil) and passes on a 2xx answer.
// Redirects are followed as client does. Errors name the URL with its
// password and secret query parameters masked.
//
// The client may be one from servicedefaults' App.HealthHTTPClient, so
// target may be a logical URL such as "https+http://catalog/health" (or
// just "/health"), and the probe stays outside the resilience pipeline:
// not retried, not held for its total timeout, not counted by its
// circuit breakers.
func HTTP(name string, client *http.Client, target string) Check {
	if client == nil {
		client = http.DefaultClient
	}
	shown := redact.URL(target)
	return Check{
		Name: name,
		Tags: []string{TagReady},
		Check: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return fmt.Errorf("GET %s: invalid request", shown)
			}
			resp, err := client.Do(req)
			if err != nil {
				var ue *url.Error
				if errors.As(err, &ue) {
					err = ue.Err
				}
				return fmt.Errorf("GET %s: %w", shown, err)
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("GET %s: status %s", shown, resp.Status)
			}
			return nil
		},
	}
}
