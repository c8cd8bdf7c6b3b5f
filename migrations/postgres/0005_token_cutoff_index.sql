-- The cutoff poll (every replica, every few seconds) reads the cutoffs set recently.
CREATE INDEX token_cutoffs_not_before_idx ON token_cutoffs (not_before);
