"""The engine: turns queued runs into attempts on executors and drives them to a final state."""
