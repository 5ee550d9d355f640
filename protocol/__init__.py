"""robeing."""
