package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
)

// Projection is a read model fed by streams. Its rows live in the service's
// database beside the checkpoints that say how far it has read.
type Projection interface {
	// Name is the projection's name in the admin API and the checkpoints.
	Name() string
	// Streams are the streams it reads, each in order.
	Streams() []string
	// Apply applies one record in tx. A record the projection does not
	// use is no error; one it can never use (it does not decode) is an
	// error wrapping bus.ErrPoison, and is skipped; any other error stops
	// the projection until the record applies.
	Apply(ctx context.Context, tx *sql.Tx, r bus.Record) error
	// Reset deletes every row of the read model.
	Reset(ctx context.Context, tx *sql.Tx) error
}

// ErrRebuilt: the projection was rebuilt after the batch was read; read
// again from the checkpoint.
var ErrRebuilt = errors.New("the projection was rebuilt meanwhile")

// Checkpoints keep the projections' positions in the streams, in the
// service's database, and apply batches of records with them.
type Checkpoints struct {
	db  *storage.DB
	log *slog.Logger
}

// NewCheckpoints returns the checkpoints kept in db.
func NewCheckpoints(db *storage.DB, log *slog.Logger) *Checkpoints {
	return &Checkpoints{db: db, log: log}
}

// Register records the projection named name, at generation 1 with no
// checkpoint, unless it exists.
func (c *Checkpoints) Register(ctx context.Context, name string) error {
	if _, err := c.db.ExecContext(ctx,
		`INSERT INTO projections (name, generation) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
		return fmt.Errorf("register projection %s: %w", name, err)
	}
	return nil
}

// Position is where the projection stands in stream: the generation it is
// at and the last sequence it applied (0 for none).
func (c *Checkpoints) Position(ctx context.Context, name, stream string) (generation int64, sequence uint64, err error) {
	var seq int64
	err = c.db.QueryRowContext(ctx, `
		SELECT p.generation, COALESCE(c.sequence, 0)
		FROM projections p LEFT JOIN checkpoints c ON c.projection = p.name AND c.stream = $2
		WHERE p.name = $1`, name, stream).Scan(&generation, &seq)
	if err != nil {
		return 0, 0, fmt.Errorf("position of %s in %s: %w", name, stream, err)
	}
	return generation, uint64(seq), nil
}

// Apply applies the records of batch that come after the checkpoint of p
// in stream, and moves the checkpoint to the last of them, in one
// transaction: after a crash the rows and the checkpoint agree, and a
// record at or before the checkpoint (a restart, another instance ahead)
// is skipped. It returns ErrRebuilt when p is no longer at generation.
func (c *Checkpoints) Apply(ctx context.Context, p Projection, generation int64, stream string, batch []bus.Record) error {
	return c.db.InTx(ctx, func(tx *sql.Tx) error {
		// The row lock serialises the batches of p, of every stream and
		// every instance, so that each reads what the one before wrote.
		res, err := tx.ExecContext(ctx, `UPDATE projections SET generation = generation WHERE name = $1 AND generation = $2`, p.Name(), generation)
		if err != nil {
			return fmt.Errorf("lock projection %s: %w", p.Name(), err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(ErrRebuilt, err)
		}
		var cp int64
		err = tx.QueryRowContext(ctx, `SELECT sequence FROM checkpoints WHERE projection = $1 AND stream = $2`, p.Name(), stream).Scan(&cp)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("checkpoint of %s in %s: %w", p.Name(), stream, err)
		}
		last := uint64(cp)
		for _, r := range batch {
			if r.Sequence <= last {
				continue
			}
			if err := p.Apply(ctx, tx, r); err != nil {
				if !errors.Is(err, bus.ErrPoison) {
					return fmt.Errorf("%s: apply %s %s (%s #%d): %w", p.Name(), r.Type, r.ID, stream, r.Sequence, err)
				}
				c.log.WarnContext(ctx, "skipping a record the projection cannot use",
					"projection", p.Name(), "stream", stream, "sequence", r.Sequence, "err", err)
			}
			last = r.Sequence
		}
		if last == uint64(cp) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO checkpoints (projection, stream, sequence) VALUES ($1, $2, $3)
			ON CONFLICT (projection, stream) DO UPDATE SET sequence = excluded.sequence`,
			p.Name(), stream, int64(last)); err != nil {
			return fmt.Errorf("checkpoint of %s in %s: %w", p.Name(), stream, err)
		}
		return nil
	})
}

// Reset drops the rows of p and its checkpoints, and moves it to a new
// generation, in one transaction: it reads every stream again from the
// start, and a batch read before the reset can no longer apply.
func (c *Checkpoints) Reset(ctx context.Context, p Projection, now time.Time) error {
	return c.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE projections SET generation = generation + 1, rebuilt_at = $2 WHERE name = $1`, p.Name(), now.UnixMicro())
		if err != nil {
			return fmt.Errorf("reset %s: %w", p.Name(), err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("reset %s: not registered", p.Name()), err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM checkpoints WHERE projection = $1`, p.Name()); err != nil {
			return fmt.Errorf("reset %s: %w", p.Name(), err)
		}
		if err := p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("reset %s: %w", p.Name(), err)
		}
		return nil
	})
}

// Saved is what the database says of a projection.
type Saved struct {
	Generation int64
	RebuiltAt  time.Time // zero when never rebuilt
	// Checkpoints maps a stream to the last sequence applied.
	Checkpoints map[string]uint64
}

// Saved reads what the database says of the projection named name.
func (c *Checkpoints) Saved(ctx context.Context, name string) (Saved, error) {
	s := Saved{Checkpoints: map[string]uint64{}}
	err := c.db.ReadTx(ctx, func(tx *sql.Tx) error {
		var rebuilt int64
		if err := tx.QueryRowContext(ctx, `SELECT generation, rebuilt_at FROM projections WHERE name = $1`, name).Scan(&s.Generation, &rebuilt); err != nil {
			return err
		}
		if rebuilt != 0 {
			s.RebuiltAt = time.UnixMicro(rebuilt).UTC()
		}
		rows, err := tx.QueryContext(ctx, `SELECT stream, sequence FROM checkpoints WHERE projection = $1`, name)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var stream string
			var seq int64
			if err := rows.Scan(&stream, &seq); err != nil {
				return err
			}
			s.Checkpoints[stream] = uint64(seq)
		}
		return rows.Err()
	})
	if err != nil {
		return Saved{}, fmt.Errorf("projection %s: %w", name, err)
	}
	return s, nil
}
