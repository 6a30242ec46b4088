"""Trust: cosign/sigstore keys, simple-signing signatures, and their registry attachments."""
