// Package paysim simulates an external payment provider, a system the shop
// does not own. Its API has a model of its own, on purpose unlike mercato's:
// "ch_"/"re_" ids, "succeeded"/"failed" statuses, amounts as decimal strings
// ("12.34"), lower-case currencies ("eur") and provider error codes. The
// payment context reaches it only through its anti-corruption layer.
//
// API:
//
//	POST /v1/charges  {"amount":"12.34","currency":"eur","source":"tok_ok","description":"..."}
//	POST /v1/refunds  {"charge":"ch_...","amount":"12.34"}   (amount omitted: what is left)
//	GET  /v1/charges/{id}
//
// POSTs require an Idempotency-Key header. Sources: tok_ok succeeds,
// tok_decline is declined (402 card_declined), tok_error always fails with
// 500 processing_error. Fault switches (SetFailureRate, SetLatency) and
// counters (Captures, Refunds) serve tests and demos; the switches are also
// served in the chaos contract every mercato instance speaks (GET and PUT
// /admin/chaos, platform/chaos), so the gateway and `mercato chaos` reach
// them once the simulator is registered in discovery: error_rate is the
// failure rate of charges and refunds, latency delays every request.
//
// State is kept in memory: it is a fake of someone else's system.
package paysim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	randv2 "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mercato-shop/mercato/platform/chaos"
	"github.com/mercato-shop/mercato/platform/runtime"
)

// Card tokens the simulator knows.
const (
	TokenOK      = "tok_ok"
	TokenDecline = "tok_decline"
	TokenError   = "tok_error"
)

// IdempotencyHeader names the request's idempotency key.
const IdempotencyHeader = "Idempotency-Key"

// ReplayedHeader is set to "true" on a response replayed for a repeated key.
const ReplayedHeader = "Idempotent-Replayed"

const maxBody = 64 << 10

// Config configures a simulator.
type Config struct {
	// Listen is the address Start binds; default 127.0.0.1:0 (a free port).
	Listen string
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
}

// Simulator is the provider: an http.Handler with its state in memory, and a
// listener of its own for when it runs beside the shop. It is safe for
// concurrent use.
type Simulator struct {
	mux    *http.ServeMux
	server *runtime.HTTPServer
	faults chaos.Faults

	// mu guards everything below. A request holds it while it does its work,
	// so two requests with one idempotency key never both do it.
	mu       sync.Mutex
	charges  map[string]*charge
	saved    map[string]savedResponse // by idempotency key
	captures int
	refunds  int
}

type charge struct {
	id, status, currency, description, failureCode string
	amount, refunded                               int64 // minor units
	created                                        int64 // unix seconds
}

// savedResponse is what a key answered the first time, and the request it
// answered, to tell a retry from a different request reusing the key.
type savedResponse struct {
	fingerprint string
	status      int
	body        []byte
}

// New returns a simulator that is not listening yet; it serves as an
// http.Handler right away (httptest.NewServer(sim)).
func New(cfg Config) *Simulator {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Simulator{
		mux:     http.NewServeMux(),
		charges: map[string]*charge{},
		saved:   map[string]savedResponse{},
	}
	s.mux.HandleFunc("POST /v1/charges", s.createCharge)
	s.mux.HandleFunc("GET /v1/charges/{id}", s.getCharge)
	s.mux.HandleFunc("POST /v1/refunds", s.createRefund)
	s.faults.Routes(s.mux, nil)
	ok := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	s.mux.HandleFunc("GET /healthz", ok)
	s.mux.HandleFunc("GET /readyz", ok)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{Type: "invalid_request_error", Code: "resource_missing",
			Message: "Unrecognized request URL (" + r.Method + " " + r.URL.Path + ")."})
	})
	s.server = runtime.NewHTTPServer(cfg.Listen, s, cfg.Logger)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start listens on Config.Listen and serves in the background.
func (s *Simulator) Start(ctx context.Context) error {
	if err := s.server.Start(ctx); err != nil {
		return fmt.Errorf("paysim: %w", err)
	}
	return nil
}

// Stop stops the listener, waiting for requests in flight until ctx ends.
func (s *Simulator) Stop(ctx context.Context) error { return s.server.Stop(ctx) }

// Hook returns the listener as a lifecycle hook.
func (s *Simulator) Hook() runtime.Hook {
	return runtime.Hook{Name: "paysim", Start: s.Start, Stop: s.Stop}
}

// Addr is the listener's host:port once started.
func (s *Simulator) Addr() string { return s.server.Addr() }

// URL is the base URL (http://host:port) once started, or "".
func (s *Simulator) URL() string {
	if s.server.Addr() == "" {
		return ""
	}
	return "http://" + s.server.Addr()
}

// SetFailureRate makes that fraction (0 to 1) of charge and refund requests
// answer 500 processing_error before doing anything.
func (s *Simulator) SetFailureRate(rate float64) {
	f := s.faults.Get()
	f.ErrorRate = min(max(rate, 0), 1)
	_ = s.faults.Set(f) // valid once clamped
}

// SetLatency delays every request by d; a request canceled meanwhile does
// nothing.
func (s *Simulator) SetLatency(d time.Duration) {
	f := s.faults.Get()
	f.Latency = min(max(d, 0), chaos.MaxLatency)
	_ = s.faults.Set(f)
}

// Captures counts the charges that captured money; replays of a key do not count.
func (s *Simulator) Captures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.captures
}

// Refunds counts the refunds made; replays of a key do not count.
func (s *Simulator) Refunds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refunds
}

// apiError is the provider's error body.
type apiError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Charge  string `json:"charge,omitempty"`
}

func writeError(w http.ResponseWriter, status int, e apiError) {
	writeJSON(w, status, map[string]apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v) // only plain structs and maps of them
	writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func processingError() apiError {
	return apiError{Type: "api_error", Code: "processing_error", Message: "An error occurred while processing the request."}
}

// admit applies the fault switches: the latency, then the failure rate. It
// reports false when the request must stop here (answered, or gone).
func (s *Simulator) admit(w http.ResponseWriter, r *http.Request, faulty bool) bool {
	f := s.faults.Get()
	latency, rate := f.Latency, f.ErrorRate
	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return false // the client gave up; nothing was done
		case <-t.C:
		}
	}
	if faulty && rate > 0 && randv2.Float64() < rate {
		writeError(w, http.StatusInternalServerError, processingError())
		return false
	}
	return true
}

// result is a response about to be written, saved under its key when it
// records something the provider did.
type result struct {
	status int
	body   any
	save   bool
}

// idempotent decodes the request into req, replays the saved response of a
// repeated key, or runs do under the lock and saves its result.
func (s *Simulator) idempotent(w http.ResponseWriter, r *http.Request, req any, do func() result) {
	key := r.Header.Get(IdempotencyHeader)
	if key == "" || len(key) > 255 {
		writeError(w, http.StatusBadRequest, apiError{Type: "invalid_request_error", Code: "idempotency_key_required",
			Message: "Send an Idempotency-Key header of 1 to 255 characters."})
		return
	}
	// Read to the end first: only then does the server notice a client
	// that hangs up, and cancel the request's context during the delay.
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Type: "invalid_request_error", Code: "parameter_invalid", Message: err.Error()})
		return
	}
	if !s.admit(w, r, true) {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		writeError(w, http.StatusBadRequest, apiError{Type: "invalid_request_error", Code: "parameter_invalid", Message: err.Error()})
		return
	}
	canonical, _ := json.Marshal(req)
	fingerprint := r.URL.Path + " " + string(canonical)

	s.mu.Lock()
	defer s.mu.Unlock()
	if saved, ok := s.saved[key]; ok {
		if saved.fingerprint != fingerprint {
			writeError(w, http.StatusConflict, apiError{Type: "idempotency_error", Code: "idempotency_mismatch",
				Message: "Keys for idempotent requests can only be used with the same parameters they were first used with."})
			return
		}
		w.Header().Set(ReplayedHeader, "true")
		writeBody(w, saved.status, saved.body)
		return
	}
	res := do()
	body, _ := json.Marshal(res.body)
	// Only what the provider did is saved: a request refused by validation
	// or a failure changed nothing, so the same key may be tried again.
	if res.save {
		s.saved[key] = savedResponse{fingerprint: fingerprint, status: res.status, body: body}
	}
	writeBody(w, res.status, body)
}

type chargeRequest struct {
	Amount      string `json:"amount"`
	Currency    string `json:"currency"`
	Source      string `json:"source"`
	Description string `json:"description,omitempty"`
}

type chargeJSON struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	Status         string `json:"status"`
	Amount         string `json:"amount"`
	AmountRefunded string `json:"amount_refunded"`
	Currency       string `json:"currency"`
	Captured       bool   `json:"captured"`
	Refunded       bool   `json:"refunded"`
	Description    string `json:"description,omitempty"`
	FailureCode    string `json:"failure_code,omitempty"`
	Created        int64  `json:"created"`
}

func (c *charge) json() chargeJSON {
	return chargeJSON{
		ID: c.id, Object: "charge", Status: c.status,
		Amount: formatAmount(c.amount), AmountRefunded: formatAmount(c.refunded), Currency: c.currency,
		Captured: c.status == "succeeded", Refunded: c.status == "succeeded" && c.refunded == c.amount,
		Description: c.description, FailureCode: c.failureCode, Created: c.created,
	}
}

func invalid(code, message string) result {
	return result{status: http.StatusBadRequest, body: map[string]apiError{"error": {Type: "invalid_request_error", Code: code, Message: message}}}
}

func (s *Simulator) createCharge(w http.ResponseWriter, r *http.Request) {
	var req chargeRequest
	s.idempotent(w, r, &req, func() result {
		amount, ok := parseAmount(req.Amount)
		if !ok || amount == 0 {
			return invalid("invalid_amount", "Amount must be a positive decimal with at most two decimals, as in \"12.34\".")
		}
		if !validCurrency(req.Currency) {
			return invalid("invalid_currency", "Currency must be a three-letter lower-case ISO code, as in \"eur\".")
		}
		c := &charge{id: newID("ch_"), currency: req.Currency, description: req.Description, amount: amount, created: time.Now().Unix()}
		switch req.Source {
		case TokenOK:
			c.status = "succeeded"
			s.charges[c.id] = c
			s.captures++
			return result{status: http.StatusCreated, body: c.json(), save: true}
		case TokenDecline:
			c.status, c.failureCode = "failed", "card_declined"
			s.charges[c.id] = c
			return result{status: http.StatusPaymentRequired, save: true, body: map[string]apiError{"error": {
				Type: "card_error", Code: "card_declined", Message: "Your card was declined.", Charge: c.id}}}
		case TokenError:
			return result{status: http.StatusInternalServerError, body: map[string]apiError{"error": processingError()}}
		default:
			return invalid("invalid_source", "No such source: '"+req.Source+"'.")
		}
	})
}

type refundRequest struct {
	Charge string `json:"charge"`
	Amount string `json:"amount,omitempty"`
}

type refundJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Status  string `json:"status"`
	Charge  string `json:"charge"`
	Amount  string `json:"amount"`
	Created int64  `json:"created"`
}

func (s *Simulator) createRefund(w http.ResponseWriter, r *http.Request) {
	var req refundRequest
	s.idempotent(w, r, &req, func() result {
		c, ok := s.charges[req.Charge]
		if !ok {
			return result{status: http.StatusNotFound, body: map[string]apiError{"error": {
				Type: "invalid_request_error", Code: "resource_missing", Message: "No such charge: '" + req.Charge + "'."}}}
		}
		left := int64(0)
		if c.status == "succeeded" {
			left = c.amount - c.refunded
		}
		amount := left
		if req.Amount != "" {
			if amount, ok = parseAmount(req.Amount); !ok || amount == 0 {
				return invalid("invalid_amount", "Amount must be a positive decimal with at most two decimals, as in \"12.34\".")
			}
		}
		if amount > left || amount == 0 {
			return invalid("amount_too_large", fmt.Sprintf("The charge has %s left to refund.", formatAmount(left)))
		}
		c.refunded += amount
		s.refunds++
		return result{status: http.StatusCreated, save: true, body: refundJSON{
			ID: newID("re_"), Object: "refund", Status: "succeeded", Charge: c.id, Amount: formatAmount(amount), Created: time.Now().Unix(),
		}}
	})
}

func (s *Simulator) getCharge(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r, false) {
		return
	}
	s.mu.Lock()
	c, ok := s.charges[r.PathValue("id")]
	var body chargeJSON
	if ok {
		body = c.json()
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, apiError{Type: "invalid_request_error", Code: "resource_missing",
			Message: "No such charge: '" + r.PathValue("id") + "'."})
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails
	return prefix + hex.EncodeToString(b[:])
}

// parseAmount reads "12", "12.3" or "12.34" as minor units (1234).
func parseAmount(s string) (int64, bool) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && (frac == "" || len(frac) > 2)) || !digits(whole) || !digits(frac) {
		return 0, false
	}
	for len(frac) < 2 {
		frac += "0"
	}
	n, err := strconv.ParseInt(whole+frac, 10, 64)
	return n, err == nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func formatAmount(minor int64) string {
	return fmt.Sprintf("%d.%02d", minor/100, minor%100)
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for _, r := range c {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}
