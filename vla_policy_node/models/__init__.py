"""Policy backends behind one interface, selected by name from a registry."""
