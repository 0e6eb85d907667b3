-- depends: 0014.audit-actor-check
-- A flagged code can be reviewed and cleared (issue 12, item 5): by staff of the owning cooperative
-- or a regulator, with a note. Only scans after the clearance count towards a new flag. The change is
-- an audited update of the code (trigger audit_edits: who, when, before and after).
ALTER TABLE codes
    ADD COLUMN flag_cleared_at timestamptz,
    ADD COLUMN flag_review text CHECK (length(flag_review) BETWEEN 1 AND 500);
