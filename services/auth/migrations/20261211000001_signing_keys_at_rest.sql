-- Signing keys are encrypted at rest: AES-256-GCM under a key-encryption key
-- (KEK) the service gets as a secret. `private_pkcs8` only holds keys written
-- before this migration (or by a replica not yet upgraded); the service seals
-- them on start and empties the column.
ALTER TABLE signing_keys ALTER COLUMN private_pkcs8 DROP NOT NULL;
ALTER TABLE signing_keys
    ADD COLUMN private_sealed BYTEA,
    ADD COLUMN private_nonce  BYTEA CHECK (octet_length(private_nonce) = 12),
    ADD COLUMN kek_id         TEXT;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_private_key_check CHECK (
    (private_pkcs8 IS NULL AND private_sealed IS NOT NULL AND private_nonce IS NOT NULL
        AND kek_id IS NOT NULL)
    OR (private_pkcs8 IS NOT NULL AND private_sealed IS NULL AND private_nonce IS NULL
        AND kek_id IS NULL)
);
