-- depends: 0001.foundation 0005.trace
-- Found by the bad-input corpus (tests/corpus/): values the API accepted and stored, that no real
-- cooperative or batch has. Checked in the database so the API, the CLI and the demo all refuse them
-- (a check violation is a 422 problem). NOT VALID: rows already stored are left alone.

-- Bidirectional overrides, zero-width and other invisible characters make a cooperative's name look
-- like another's on a consumer page ("coop\u202egnp.exe"); control characters break logs and labels.
ALTER TABLE cooperatives ADD CONSTRAINT cooperatives_name_visible
    CHECK (name !~ '[\x01-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]')
    NOT VALID;

-- A quantity of 1e400 kg is a typing or attack error, not a harvest; a trillion units is plenty.
ALTER TABLE batches ADD CONSTRAINT batches_quantity_plausible CHECK (quantity < 1e12) NOT VALID;
ALTER TABLE batch_lineage ADD CONSTRAINT batch_lineage_quantity_plausible CHECK (quantity < 1e12) NOT VALID;
ALTER TABLE compliance_certificates ADD CONSTRAINT compliance_certificates_quantity_plausible
    CHECK (quantity < 1e12) NOT VALID;
