-- The calls of the budget in PostgreSQL (dispatcher/pacing/postgres.py): its functions are in schema.sql.

-- take --
-- TAKE as one limiter sends it: what never changes for it is bound once as literals (budget_take's
-- sql.Literal values, in order: the rate and quota as the budget keeps them, the tolerance, the time
-- to live, then the shape: interval, unit, limit, window, top, first, increase, idle, ramp, settle),
-- so that each slot sends three parameters, not seventeen: the key, the cost and now (NULL: the
-- database's clock). Measured: 40 us of the client's CPU less a slot.
SELECT status, value, pace, held, number FROM dispatcher.budget_take(%s::text, {rate}, {quota}, %s::int8,
{tolerance}, {ttl}, %s::int8, {interval}, {unit}, {limit}, {window}, {top}, {first}, {increase}, {idle}, {ramp},
{settle})

-- step_down --
SELECT stepped, pace FROM dispatcher.budget_step_down(%s::text, %s::int8, %s::int8, %s::int8, %s::int8,
%s::int8, %s::int8, %s::int8, %s::int8, %s::int8, %s::int8, %s::int8, %s::int8, %s::int8)

-- pause --
SELECT dispatcher.budget_pause(%s::text, %s::int8, %s::int8, %s::int8)
