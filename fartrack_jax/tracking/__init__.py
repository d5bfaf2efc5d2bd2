"""Tracking: host crops (`crop`), the jitted batched tracker (`tracker`), offline evaluation (`evaluate`)."""
