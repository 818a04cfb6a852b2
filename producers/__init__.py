"""What the orchestrator imports: light (no Playwright, no decryption path)."""
