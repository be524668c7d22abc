package domain

import (
	"errors"
	"testing"
	"time"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func eur(n int64) Money { return Money{Amount: n, Currency: "EUR"} }

func pending(t *testing.T) *Payment {
	t.Helper()
	p, err := NewPayment("o1", "c1", eur(1234), now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewPayment_RejectsInvalidCharges(t *testing.T) {
	p := pending(t)
	if p.Status() != Pending || p.ID() == "" || p.Amount() != eur(1234) || p.Settled() {
		t.Fatalf("new payment %+v", p)
	}
	for name, tc := range map[string]struct {
		order, customer string
		amount          Money
	}{
		"no order":      {"", "c1", eur(1)},
		"no customer":   {"o1", "", eur(1)},
		"zero":          {"o1", "c1", eur(0)},
		"negative":      {"o1", "c1", eur(-5)},
		"no currency":   {"o1", "c1", Money{Amount: 1}},
		"lower case":    {"o1", "c1", Money{Amount: 1, Currency: "eur"}},
		"zero decimals": {"o1", "c1", Money{Amount: 1, Currency: "JPY"}},
	} {
		if _, err := NewPayment(tc.order, tc.customer, tc.amount, now); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: want ErrInvalidCommand, got %v", name, err)
		}
	}
}

func TestPayment_Transitions(t *testing.T) {
	later := now.Add(time.Minute)
	type step func(p *Payment) error
	capture := func(p *Payment) error { return p.Capture("ch_1", later) }
	decline := func(p *Payment) error { return p.Decline(ReasonDeclined, "ch_2", later) }
	refund := func(p *Payment) error { return p.Refund("re_1", later) }
	tests := []struct {
		name  string
		steps []step
		want  Status // after the last step that succeeds
		fails bool   // the last step fails
	}{
		{"capture", []step{capture}, Captured, false},
		{"decline", []step{decline}, Declined, false},
		{"capture then refund", []step{capture, refund}, Refunded, false},
		{"refund before capture", []step{refund}, Pending, true},
		{"capture twice", []step{capture, capture}, Captured, true},
		{"decline after capture", []step{capture, decline}, Captured, true},
		{"capture after decline", []step{decline, capture}, Declined, true},
		{"refund a declined payment", []step{decline, refund}, Declined, true},
		{"refund twice", []step{capture, refund, refund}, Refunded, true},
		{"capture after refund", []step{capture, refund, capture}, Refunded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pending(t)
			var err error
			for _, s := range tt.steps {
				if err = s(p); err != nil {
					break
				}
			}
			if tt.fails != errors.Is(err, ErrTransition) {
				t.Fatalf("last step: %v, want failure %v", err, tt.fails)
			}
			if p.Status() != tt.want {
				t.Fatalf("status %s, want %s", p.Status(), tt.want)
			}
		})
	}

	p := NewVoided("o2", now)
	if p.Status() != Voided || p.Reason() != ReasonVoided || !p.Settled() || p.Paid() {
		t.Fatalf("tombstone %+v", p)
	}
	if err := p.Capture("ch_3", later); !errors.Is(err, ErrTransition) {
		t.Fatalf("capture of a voided payment: %v", err)
	}
	if err := pending(t).Capture("", later); !errors.Is(err, ErrTransition) {
		t.Fatalf("capture without a charge id: %v", err)
	}
}

func TestPayment_SettleAndRefundedAmount(t *testing.T) {
	p := pending(t)
	if err := p.Settle(ChargeOutcome{ChargeID: "ch_1"}, now); err != nil || p.Status() != Captured || p.ChargeID() != "ch_1" || !p.Paid() {
		t.Fatalf("settle captured: %v %+v", err, p)
	}
	if got := p.RefundedAmount(); got != eur(0) {
		t.Fatalf("refunded amount before refund %v", got)
	}
	if err := p.Refund("re_1", now); err != nil || p.RefundedAmount() != eur(1234) || p.RefundID() != "re_1" {
		t.Fatalf("refund: %v %+v", err, p)
	}

	d := pending(t)
	if err := d.Settle(ChargeOutcome{ChargeID: "ch_2", Declined: true}, now); err != nil || d.Status() != Declined || d.Reason() != ReasonDeclined {
		t.Fatalf("settle declined: %v %+v", err, d)
	}
}

func TestMoney_Decimal(t *testing.T) {
	for _, tc := range []struct {
		minor int64
		want  string
	}{
		{0, "0.00"}, {1, "0.01"}, {10, "0.10"}, {99, "0.99"}, {100, "1.00"}, {1234, "12.34"},
		{123456789, "1234567.89"}, {9223372036854775807, "92233720368547758.07"},
	} {
		got, err := eur(tc.minor).Decimal()
		if err != nil || got != tc.want {
			t.Errorf("%d: got %q %v, want %q", tc.minor, got, err, tc.want)
		}
		back, err := ParseDecimal(got, "EUR")
		if err != nil || back != eur(tc.minor) {
			t.Errorf("%q back: got %v %v, want %d", got, back, err, tc.minor)
		}
	}
	if _, err := eur(-1).Decimal(); !errors.Is(err, ErrInvalidAmount) {
		t.Errorf("negative: %v", err)
	}
	if _, err := (Money{Amount: 100, Currency: "JPY"}).Decimal(); !errors.Is(err, ErrUnsupportedCurrency) {
		t.Errorf("JPY: %v", err)
	}
}

func TestParseDecimal(t *testing.T) {
	for in, want := range map[string]int64{"0.01": 1, "12": 1200, "12.3": 1230, "12.34": 1234, "1234567.89": 123456789, "007.00": 700} {
		got, err := ParseDecimal(in, "EUR")
		if err != nil || got != eur(want) {
			t.Errorf("%q: got %v %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1.00", "+1.00", "12.345", "12.", ".5", "1,00", "1e3", " 1.00", "abc", "0x10", "92233720368547758.08"} {
		if _, err := ParseDecimal(in, "EUR"); !errors.Is(err, ErrInvalidAmount) {
			t.Errorf("%q: want ErrInvalidAmount, got %v", in, err)
		}
	}
	if _, err := ParseDecimal("1.00", "XXX"); !errors.Is(err, ErrUnsupportedCurrency) {
		t.Errorf("unknown currency: %v", err)
	}
}
