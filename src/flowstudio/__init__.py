"""FlowStudio: multi-step image generation flows with a durable history."""
