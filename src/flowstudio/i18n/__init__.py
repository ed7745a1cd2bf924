"""Language: search text folded across scripts and widths (`search`)."""
