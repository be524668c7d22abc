package domain

import (
	"fmt"
	"strconv"
	"strings"
)

// Money is an amount in minor units of an ISO 4217 currency. Never a float.
type Money struct {
	Amount   int64
	Currency string
}

// decimals reports the minor digits of the currencies payments accept. Only
// currencies with two are supported, which covers the shop's markets.
func decimals(currency string) (int, bool) {
	switch currency {
	case "EUR", "USD", "GBP", "CHF", "SEK", "DKK", "NOK", "PLN", "CZK", "CAD", "AUD":
		return 2, true
	}
	return 0, false
}

// SupportedCurrency reports whether payments accept currency.
func SupportedCurrency(currency string) bool {
	_, ok := decimals(currency)
	return ok
}

// Decimal writes m in major units, as in "12.34" for 1234 EUR. Negative
// amounts and unsupported currencies are refused.
func (m Money) Decimal() (string, error) {
	if !SupportedCurrency(m.Currency) {
		return "", fmt.Errorf("%w: %q", ErrUnsupportedCurrency, m.Currency)
	}
	if m.Amount < 0 {
		return "", fmt.Errorf("%w: %d is negative", ErrInvalidAmount, m.Amount)
	}
	return fmt.Sprintf("%d.%02d", m.Amount/100, m.Amount%100), nil
}

// ParseDecimal reads a non-negative amount in major units with at most two
// decimals ("12", "12.3", "12.34") as Money in currency, with integer
// arithmetic only.
func ParseDecimal(s, currency string) (Money, error) {
	if !SupportedCurrency(currency) {
		return Money{}, fmt.Errorf("%w: %q", ErrUnsupportedCurrency, currency)
	}
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && (frac == "" || len(frac) > 2)) || !digits(whole) || !digits(frac) {
		return Money{}, fmt.Errorf("%w: %q", ErrInvalidAmount, s)
	}
	frac += strings.Repeat("0", 2-len(frac))
	n, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil {
		return Money{}, fmt.Errorf("%w: %q is out of range", ErrInvalidAmount, s)
	}
	return Money{Amount: n, Currency: currency}, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
