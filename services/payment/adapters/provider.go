package adapters

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// DefaultProviderTimeout bounds one call to the provider, with the retries
// its client's policies make.
const DefaultProviderTimeout = 5 * time.Second

// Provider is the anti-corruption layer in front of the external payment
// provider (paysim). It alone speaks the provider's model (decimal amounts,
// lower-case currencies, "ch_" ids, provider error codes) and answers in the
// shop's: domain.Money, domain.ChargeOutcome, and errors wrapping
// domain.ErrProviderUnavailable (transient: retry) or
// domain.ErrProviderRejected (the request itself was refused).
//
// Every call carries an idempotency key derived from the payment id, so a
// retry after a timeout or a crash never charges or refunds twice.
type Provider struct {
	baseURL string
	client  *http.Client
	timeout time.Duration
}

// NewProvider returns a client of the provider at baseURL. timeout bounds
// each call (DefaultProviderTimeout when zero); client carries the
// transport (tracing) and should have no timeout of its own.
func NewProvider(baseURL string, client *http.Client, timeout time.Duration) *Provider {
	if timeout <= 0 {
		timeout = DefaultProviderTimeout
	}
	return &Provider{baseURL: strings.TrimRight(baseURL, "/"), client: client, timeout: timeout}
}

// The provider's model, kept inside this file.
type (
	pspChargeRequest struct {
		Amount      string `json:"amount"`
		Currency    string `json:"currency"`
		Source      string `json:"source"`
		Description string `json:"description,omitempty"`
	}
	pspCharge struct {
		ID       string `json:"id"`
		Status   string `json:"status"` // succeeded, failed
		Amount   string `json:"amount"`
		Currency string `json:"currency"`
	}
	pspRefundRequest struct {
		Charge string `json:"charge"`
		Amount string `json:"amount"`
	}
	pspRefund struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	pspError struct {
		Error struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
			Charge  string `json:"charge"`
		} `json:"error"`
	}
)

// Charge asks the provider to capture p's amount from the card token. The
// idempotency key is the payment id. A refused card is an outcome, not an
// error.
func (c *Provider) Charge(ctx context.Context, p *domain.Payment, token string) (domain.ChargeOutcome, error) {
	amount, err := p.Amount().Decimal()
	if err != nil {
		return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w", p.ID(), err)
	}
	status, body, err := c.post(ctx, "/v1/charges", p.ID(), pspChargeRequest{
		Amount: amount, Currency: strings.ToLower(p.Amount().Currency), Source: token,
		Description: "mercato order " + p.OrderID(),
	})
	if err != nil {
		return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w", p.ID(), err)
	}
	switch {
	case status == http.StatusOK || status == http.StatusCreated:
		var ch pspCharge
		if err := json.Unmarshal(body, &ch); err != nil {
			// The charge may have happened: retry, and the key replays it.
			return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w: unreadable answer: %w", p.ID(), domain.ErrProviderUnavailable, err)
		}
		return c.outcome(p, ch)
	case status == http.StatusPaymentRequired:
		// The card was declined; the provider keeps a failed charge.
		return domain.ChargeOutcome{Declined: true, Reason: domain.ReasonDeclined, ChargeID: decodeError(body).Error.Charge}, nil
	case status == http.StatusBadRequest && decodeError(body).Error.Code == "invalid_source":
		// A token the provider does not know is a card it refuses.
		return domain.ChargeOutcome{Declined: true, Reason: domain.ReasonDeclined}, nil
	default:
		return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w", p.ID(), failure(status, body))
	}
}

func (c *Provider) outcome(p *domain.Payment, ch pspCharge) (domain.ChargeOutcome, error) {
	switch ch.Status {
	case "succeeded":
		got, err := domain.ParseDecimal(ch.Amount, strings.ToUpper(ch.Currency))
		if err != nil || got != p.Amount() || ch.ID == "" {
			return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w: captured %q %q as %q, want %v",
				p.ID(), domain.ErrProviderRejected, ch.Amount, ch.Currency, ch.ID, p.Amount())
		}
		return domain.ChargeOutcome{ChargeID: ch.ID}, nil
	case "failed":
		return domain.ChargeOutcome{Declined: true, Reason: domain.ReasonDeclined, ChargeID: ch.ID}, nil
	default:
		return domain.ChargeOutcome{}, fmt.Errorf("charge payment %s: %w: charge status %q", p.ID(), domain.ErrProviderRejected, ch.Status)
	}
}

// Refund gives back what p captured and returns the provider's refund id.
// The idempotency key is "refund-" and the payment id.
func (c *Provider) Refund(ctx context.Context, p *domain.Payment) (string, error) {
	amount, err := p.Amount().Decimal()
	if err != nil {
		return "", fmt.Errorf("refund payment %s: %w", p.ID(), err)
	}
	status, body, err := c.post(ctx, "/v1/refunds", "refund-"+p.ID(), pspRefundRequest{Charge: p.ChargeID(), Amount: amount})
	if err != nil {
		return "", fmt.Errorf("refund payment %s: %w", p.ID(), err)
	}
	if status != http.StatusOK && status != http.StatusCreated {
		return "", fmt.Errorf("refund payment %s: %w", p.ID(), failure(status, body))
	}
	var re pspRefund
	if err := json.Unmarshal(body, &re); err != nil {
		return "", fmt.Errorf("refund payment %s: %w: unreadable answer: %w", p.ID(), domain.ErrProviderUnavailable, err)
	}
	if re.Status != "succeeded" || re.ID == "" {
		return "", fmt.Errorf("refund payment %s: %w: refund %q is %q", p.ID(), domain.ErrProviderUnavailable, re.ID, re.Status)
	}
	return re.ID, nil
}

// post sends one request within the call timeout. A transport failure or
// timeout wraps domain.ErrProviderUnavailable; the client's circuit breaker
// open before anything was sent wraps domain.ErrProviderDown too.
func (c *Provider) post(ctx context.Context, path, key string, req any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Whether any attempt (the client may retry) wrote its request: once
	// one did, the provider may have acted on it.
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	payload, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+path, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Idempotency-Key", key)
	resp, err := c.client.Do(r)
	if err != nil {
		if errors.Is(err, resilience.ErrOpen) && !sent.Load() {
			return 0, nil, fmt.Errorf("%w: %w: %w", domain.ErrProviderUnavailable, domain.ErrProviderDown, err)
		}
		return 0, nil, fmt.Errorf("%w: %w", domain.ErrProviderUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read answer: %w", domain.ErrProviderUnavailable, err)
	}
	return resp.StatusCode, body, nil
}

// failure turns an error answer into a domain error: worth retrying
// (5xx, 408, 429), or a refusal of the request itself.
func failure(status int, body []byte) error {
	e := decodeError(body).Error
	if status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests {
		return fmt.Errorf("%w: %d %s", domain.ErrProviderUnavailable, status, e.Code)
	}
	return fmt.Errorf("%w: %d %s: %s", domain.ErrProviderRejected, status, e.Code, e.Message)
}

func decodeError(body []byte) pspError {
	var e pspError
	_ = json.Unmarshal(body, &e) // an unreadable error body leaves the code empty
	return e
}
