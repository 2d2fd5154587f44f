-- The first statement of a limited type's claim: takes the type's limit row,
-- so that claims of this type from every daemon take turns; the claim's
-- own statement then sees every earlier claim committed. $1 job type. The
-- limit, or no row when it was cleared meanwhile.
SELECT max_running FROM ops_type_limits WHERE job_type = $1 FOR UPDATE
