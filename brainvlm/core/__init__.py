"""The core every layer may import: project paths, seeding, and the one JSON/JSONL writer and reader."""
