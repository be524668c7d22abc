package bus

import "time"

// WithDefaults exposes the consumer defaults to the external tests.
func WithDefaults(c Consumer) Consumer { return c.withDefaults() }

// BackoffOf exposes the redelivery delay after the delivered-th attempt.
func BackoffOf(c Consumer, delivered uint64) time.Duration {
	return c.withDefaults().backoff(delivered)
}
