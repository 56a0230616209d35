"""Back ends: lowering a rewritten graph to something that runs on a device."""
