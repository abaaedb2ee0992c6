"""Step one of the method: per-frame MFCCs of the first N frames, concatenated into one vector per track."""
