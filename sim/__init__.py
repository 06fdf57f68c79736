"""ilma simulator: a building that does not exist, run by the same control core as a real one."""
