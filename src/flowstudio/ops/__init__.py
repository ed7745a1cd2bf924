"""Operating FlowStudio: log set-up (and, as it grows, metrics, request ids, usage)."""
