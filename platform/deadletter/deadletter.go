// Package deadletter serves the admin API of a dead-letter stream (see
// bus.Consumer.DeadLetter): list the messages that consumers gave up, show
// one, replay one or all of them to where they came from, discard one.
//
// Only callers with the admin role get in. The gateway checks that too, but
// a service reachable without it must not rely on the gateway alone.
package deadletter

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/web"
)

// Path is where Routes mounts the API.
const Path = "/admin/deadletters"

// Role is the caller role the API requires.
const Role = "admin"

// Page sizes of the list.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Store is what the API needs of a dead-letter stream; *bus.DeadLetters
// provides it.
type Store interface {
	List(ctx context.Context, limit int, after uint64) ([]bus.DeadLetter, error)
	Get(ctx context.Context, seq uint64) (bus.DeadLetter, error)
	Replay(ctx context.Context, seq uint64) error
	ReplayAll(ctx context.Context) (int, error)
	Discard(ctx context.Context, seq uint64) error
}

// Routes adds the API to mux (logger may be nil):
//
//	GET    /admin/deadletters?limit=&after=  the dead letters, oldest first
//	GET    /admin/deadletters/{seq}          one, with its headers and payload
//	POST   /admin/deadletters/{seq}/replay   replay one: 202
//	POST   /admin/deadletters/replay         replay all: 202 {"replayed":n}
//	DELETE /admin/deadletters/{seq}          discard one: 204
func Routes(mux *http.ServeMux, dls Store, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &api{dls: dls, log: logger}
	mux.HandleFunc("GET "+Path, a.admin(a.list))
	mux.HandleFunc("GET "+Path+"/{seq}", a.admin(a.get))
	mux.HandleFunc("POST "+Path+"/{seq}/replay", a.admin(a.replay))
	mux.HandleFunc("POST "+Path+"/replay", a.admin(a.replayAll))
	mux.HandleFunc("DELETE "+Path+"/{seq}", a.admin(a.discard))
}

type api struct {
	dls Store
	log *slog.Logger
}

// letterJSON is a dead letter on the wire. The list leaves out Header and
// Data; Data is base64, as the payload is binary (protobuf).
type letterJSON struct {
	Seq       uint64              `json:"seq"`
	Stream    string              `json:"stream"`
	Subject   string              `json:"subject"`
	Consumer  string              `json:"consumer"`
	Reason    string              `json:"reason"`
	Delivered int                 `json:"delivered"`
	DeadAt    time.Time           `json:"dead_at"`
	ID        string              `json:"id,omitempty"`
	Type      string              `json:"type,omitempty"`
	Source    string              `json:"source,omitempty"`
	CESubject string              `json:"ce_subject,omitempty"`
	Time      time.Time           `json:"time,omitzero"`
	Headers   map[string][]string `json:"headers,omitempty"`
	Data      []byte              `json:"data,omitempty"`
}

func toJSON(dl bus.DeadLetter) letterJSON {
	return letterJSON{
		Seq: dl.Seq, Stream: dl.Stream, Subject: dl.Subject, Consumer: dl.Consumer, Reason: dl.Reason,
		Delivered: dl.Delivered, DeadAt: dl.DeadAt, ID: dl.ID, Type: dl.Type, Source: dl.Source,
		CESubject: dl.CESubject, Time: dl.Time,
	}
}

type listJSON struct {
	DeadLetters []letterJSON `json:"dead_letters"`
	// NextAfter is the after of the next page; absent on the last page.
	NextAfter uint64 `json:"next_after,omitempty"`
}

// admin lets only signed-in callers with Role through.
func (a *api) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		caller, ok := web.CallerOf(r)
		if !ok {
			web.Error(w, r, http.StatusUnauthorized, "sign in first")
			return
		}
		if !caller.HasRole(Role) {
			web.Error(w, r, http.StatusForbidden, "dead letters are for admins")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r)
	}
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var errs []web.FieldError
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			errs = append(errs, web.FieldError{Field: "limit", Message: "must be an integer from 1 to " + strconv.Itoa(MaxLimit)})
		}
		limit = n
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, web.FieldError{Field: "after", Message: "must be a sequence number"})
		}
		after = n
	}
	if len(errs) > 0 {
		web.WriteProblem(w, r, web.Invalid(errs...))
		return
	}
	// One more than asked tells whether there is a next page.
	dls, err := a.dls.List(r.Context(), limit+1, after)
	if err != nil {
		a.fail(w, r, "list dead letters", err)
		return
	}
	out := listJSON{DeadLetters: make([]letterJSON, 0, min(len(dls), limit))}
	for i, dl := range dls {
		if i == limit {
			out.NextAfter = dls[i-1].Seq
			break
		}
		out.DeadLetters = append(out.DeadLetters, toJSON(dl))
	}
	web.WriteJSON(w, http.StatusOK, out)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	seq, ok := seqOf(w, r)
	if !ok {
		return
	}
	dl, err := a.dls.Get(r.Context(), seq)
	if err != nil {
		a.fail(w, r, "get dead letter", err)
		return
	}
	out := toJSON(dl)
	out.Headers, out.Data = dl.Header, dl.Data
	web.WriteJSON(w, http.StatusOK, out)
}

type replayedJSON struct {
	Replayed int `json:"replayed"`
}

func (a *api) replay(w http.ResponseWriter, r *http.Request) {
	seq, ok := seqOf(w, r)
	if !ok {
		return
	}
	if err := a.dls.Replay(r.Context(), seq); err != nil {
		a.fail(w, r, "replay dead letter", err)
		return
	}
	a.audit(r, "dead letter replayed", "seq", seq)
	web.WriteJSON(w, http.StatusAccepted, replayedJSON{Replayed: 1})
}

func (a *api) replayAll(w http.ResponseWriter, r *http.Request) {
	n, err := a.dls.ReplayAll(r.Context())
	if n > 0 {
		a.audit(r, "dead letters replayed", "count", n)
	}
	if err != nil {
		a.fail(w, r, "replay dead letters", err)
		return
	}
	web.WriteJSON(w, http.StatusAccepted, replayedJSON{Replayed: n})
}

func (a *api) discard(w http.ResponseWriter, r *http.Request) {
	seq, ok := seqOf(w, r)
	if !ok {
		return
	}
	if err := a.dls.Discard(r.Context(), seq); err != nil {
		a.fail(w, r, "discard dead letter", err)
		return
	}
	a.audit(r, "dead letter discarded", "seq", seq)
	w.WriteHeader(http.StatusNoContent)
}

// seqOf reads the {seq} path value, answering 400 when it is not one.
func seqOf(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		web.Error(w, r, http.StatusBadRequest, "a dead letter is named by its sequence number, a positive integer")
		return 0, false
	}
	return seq, true
}

// fail answers 404 for a missing dead letter and 500 for anything else,
// which it logs.
func (a *api) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, bus.ErrNotFound) {
		web.Error(w, r, http.StatusNotFound, "no such dead letter")
		return
	}
	a.log.ErrorContext(r.Context(), op, "err", err)
	web.Error(w, r, http.StatusInternalServerError, "")
}

// audit logs who changed the dead letters.
func (a *api) audit(r *http.Request, msg string, args ...any) {
	caller, _ := web.CallerOf(r)
	a.log.InfoContext(r.Context(), msg, append(args, "by", caller.Subject)...)
}
